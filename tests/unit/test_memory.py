"""The daemon pins glibc's mmap threshold so per-bar buffers never settle in the heap."""
import subprocess
import sys
import textwrap

import numpy as np

from streamer.memory import pin_mmap_threshold

# Frees a 4 MB block (which, unpinned, raises glibc's threshold to 4 MB), then holds a 1 MB
# block: how many blocks glibc has mapped on their own (mallinfo2's hblks) tells where it went.
PROBE = textwrap.dedent("""
    import ctypes, sys
    from streamer.memory import pin_mmap_threshold
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    if sys.argv[1] == "pinned":
        assert pin_mmap_threshold()
    libc.free(libc.malloc(4 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(1 << 20)
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
""")


def _mapped_blocks(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_pinned_threshold_keeps_large_buffers_out_of_the_heap():
    assert _mapped_blocks("default") == 0  # glibc's own rule: after the 4 MB free, 1 MB goes to the heap
    assert _mapped_blocks("pinned") == 1  # pinned at 128 KiB: mapped on its own, unmapped on free


def test_without_a_c_library_the_allocator_is_left_alone():
    assert pin_mmap_threshold(libc_name="chiplofi-no-such-library") is False
    assert pin_mmap_threshold(libc_name=None) is False


def test_the_effects_chains_pieces_stay_under_the_pinned_mmap_threshold():
    """A planar float64 piece of the effects chain (2 channels) must be a heap allocation, not an
    mmap, in a daemon whose threshold is pinned: at 16,384 frames (256 KiB) every intermediate of
    a bar was a fresh mapping whose pages the kernel faulted in and zeroed, about four times the
    chain's CPU (bench/bench_render.py: render + effects 84× → 133× real time). A guard on the
    sizes: counting the page faults themselves varied from 260 to 2,300 a bar between runs on
    these machines (the kernel's memory monitor runs beside), too loose for a test."""
    from streamer.effects import CHANNELS, EffectsChain
    from streamer.memory import MMAP_THRESHOLD_BYTES

    assert EffectsChain.PIECE * CHANNELS * np.dtype(np.float64).itemsize < MMAP_THRESHOLD_BYTES
