"""chiplofi music models: data, VAE, LSTM, composer. Never imports `streamer`."""

import os

# Every torch import in this package comes after this line (the package loads first). torch's
# OpenMP threads spin-wait between parallel regions by default, so on a 2-core machine where
# anything else holds a core, each training thread spends its time slices spinning for a partner
# that is not running: one VAE batch measured 2.9-3.5 CPU s at load 5 against 0.37-0.44 s with
# PASSIVE (0.28-0.30 s on one thread). libgomp reads the variable once, when torch loads it; an
# operator's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
