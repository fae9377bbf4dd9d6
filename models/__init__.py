"""chiplofi music models: data, VAE, LSTM, composer. Never imports `streamer`."""
