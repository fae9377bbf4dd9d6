"""What chiplofi's tests and benchmarks share (installed by `make setup`, imported as `testkit`).

- doubles:  stand-ins at the daemon's boundaries for unit tests (sinks, composers, notifier; and
            for its factories a renderer without FluidSynth, pass-through effects, a virtual clock)
- daemon:   running a Daemon in-process: an unpaced config, running it to its end, waiting
- snapshots: a typed /status snapshot with every section filled in
- waiting:  a free loopback port, polling with a deadline, a daemon's JSON status, teardown
- receiver: nginx-rtmp on loopback, ffmpeg recorders, packet continuity and silence checks
- drift:    A/V drift from a recording's packet timestamps (ffprobe)
- procfs:   CPU seconds, children and RSS of a process, from /proc
"""
