"""The daemon pins glibc's mmap threshold so per-bar buffers never settle in the heap."""
import subprocess
import sys
import textwrap

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


def test_the_effects_chain_runs_a_bar_without_faulting_in_fresh_pages_under_the_pinned_threshold():
    """In a process with the daemon's pinned mmap threshold, a bar (~130,000 frames) through the
    effects chain must not map fresh memory for its intermediates: with 16,384-frame pieces every
    float64 intermediate (256 KiB) was an mmap whose pages the kernel faulted in and zeroed, about
    9,700 minor faults a bar and four times the chain's CPU. The bar's output array itself (1 MB,
    ~260 pages) is the one mapping left."""
    code = textwrap.dedent("""
        import resource
        import numpy as np
        from streamer.config import Config
        from streamer.effects import EffectsChain
        from streamer.memory import pin_mmap_threshold
        assert pin_mmap_threshold()
        chain = EffectsChain.from_settings(Config().effects, 44100, seed=1)
        bar = (np.random.default_rng(0).standard_normal((132300, 2)) * 0.1).astype(np.float32)
        chain.process(bar)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            chain.process(bar)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """)
    faults = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert faults < 1000, f"{faults:.0f} minor page faults per bar"
