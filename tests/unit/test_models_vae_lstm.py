"""Bar VAE and bar LSTM on tiny debug models: shapes, learning, numpy copies and layout match torch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.config import LSTMConfig, VAEConfig
from models.debug import DEBUG_LSTM, DEBUG_VAE, debug_models, synthetic_corpus
from models.inference import FastDecoder, FastLSTM, sample_from_logits
from models.layout import CONTEXT_OFFSETS, N_CHORDS, TAIL_STEPS, chord_index, lstm_shapes, vae_shapes
from models.lstm import BarLSTM, sequence_losses
from models.tensors import SongSequences, balanced_windows, bar_tensors, transpose_batch, windows
from models.tokens import STEPS_PER_BAR, STYLES, VOCAB_SIZES
from models.vae import BarCondition, BarVAE, active_units, context_tokens, kl_terms, reconstruction_loss


def condition(batch: int) -> BarCondition:
    return BarCondition(root=torch.arange(batch) % 13, quality=torch.arange(batch) % 11,
                        mode=torch.arange(batch) % 2, key_offset=torch.zeros(batch, dtype=torch.int64),
                        style=F.one_hot(torch.arange(batch) % 3, len(STYLES)).float(),
                        activity=torch.arange(batch) % 4)


def test_vae_shapes():
    vae, _ = debug_models()
    tokens = bar_tensors(synthetic_corpus(n_songs=2, bars_per_song=3)).tokens  # (6, 16, 4)
    cond = condition(6)
    mu, logvar = vae.encode(tokens, cond, torch.ones(6, 4, dtype=torch.bool))
    assert mu.shape == logvar.shape == (6, DEBUG_VAE.latent_dim)
    logits = vae.decode(mu, cond, tokens)
    assert [tuple(voice.shape) for voice in logits] == [(6, STEPS_PER_BAR, v) for v in VOCAB_SIZES]
    logits_tf, _, _ = vae(tokens, cond, None, torch.zeros(6, TAIL_STEPS, 4, dtype=torch.int64), sample=False)
    assert [tuple(voice.shape) for voice in logits_tf] == [(6, STEPS_PER_BAR, v) for v in VOCAB_SIZES]
    earlier = context_tokens(tokens, None)  # (B, 16, K, 4)
    assert earlier.shape == (6, STEPS_PER_BAR, len(CONTEXT_OFFSETS), 4)
    for index, offset in enumerate(CONTEXT_OFFSETS):
        if offset <= 5:
            assert torch.equal(earlier[:, 5, index], tokens[:, 5 - offset])
        else:
            assert (earlier[:, 5, index] == 0).all()  # before the bar: the (empty) previous bar
    assert (earlier[:, 0] == 0).all()


def test_step_logits_do_not_see_the_future():
    vae, _ = debug_models(seed=4)
    data = bar_tensors(synthetic_corpus(n_songs=1, bars_per_song=2))
    cond = data.condition(slice(0, 1))
    z = torch.randn(1, DEBUG_VAE.latent_dim)
    changed = data.tokens[:1].clone()
    changed[:, 9:] = 0
    with torch.no_grad():
        a = vae.decode(z, cond, data.tokens[:1])
        b = vae.decode(z, cond, changed)
    for voice in range(4):
        assert torch.allclose(a[voice][:, :10], b[voice][:, :10])  # step 9 sees steps 5, 7, 8 only


def test_a_few_vae_steps_lower_the_loss():
    torch.manual_seed(0)
    vae, _ = debug_models()
    vae.train()
    data = bar_tensors(synthetic_corpus())
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        index = torch.randint(0, len(data), (32,))
        cond = data.condition(index)
        logits, mu, logvar = vae(data.tokens[index], cond, data.voice_mask[index], data.previous_tail[index])
        recon, _, _ = reconstruction_loss(logits, data.tokens[index], data.voice_mask[index])
        kl_free, _ = kl_terms(mu, logvar, 0.1)
        loss = recon + 0.1 * kl_free
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_masked_voices_do_not_count():
    vae, _ = debug_models()
    data = bar_tensors(synthetic_corpus(n_songs=3, bars_per_song=2))
    logits, _, _ = vae(data.tokens, data.condition(slice(None)), data.voice_mask, data.previous_tail)
    none_known = torch.zeros_like(data.voice_mask)
    loss, correct, counted = reconstruction_loss(logits, data.tokens, none_known)
    assert float(loss.detach()) == 0.0 and float(counted) == 0.0


def test_active_units_and_free_bits():
    mu = torch.zeros(100, 4)
    mu[:, 0] = torch.linspace(-2, 2, 100)
    assert active_units(mu) == 1
    free, plain = kl_terms(torch.zeros(10, 4), torch.zeros(10, 4), free_bits=0.5)
    assert float(plain) == 0.0 and float(free) == 2.0


def test_transpose_batch_folds_into_range():
    data = bar_tensors(synthetic_corpus(n_songs=1, bars_per_song=2))
    shift = torch.tensor([2, -2])
    moved, root = transpose_batch(data.tokens, data.root, shift)
    onset = data.tokens[..., :3] >= 2
    moved_by = (moved[..., :3] - data.tokens[..., :3]) % 12
    assert (moved_by[0][onset[0]] == 2).all() and (moved_by[1][onset[1]] == 10).all()
    assert ((root - data.root) % 12).tolist() == [2, 10]
    assert (moved[..., :3] < VOCAB_SIZES[0]).all() and (moved >= 0).all()


def test_fast_decoder_matches_torch():
    vae, _ = debug_models(seed=3)
    decoder = FastDecoder.from_module(vae)
    z = torch.randn(1, DEBUG_VAE.latent_dim)
    style = torch.tensor([[0.5, 0.3, 0.2]])
    cond = BarCondition(torch.tensor([4]), torch.tensor([3]), torch.tensor([1]), torch.tensor([0]), style,
                        torch.tensor([2]))
    tokens = bar_tensors(synthetic_corpus(n_songs=1, bars_per_song=2)).tokens[1:2]  # (1, 16, 4)
    tail = torch.randint(0, 30, (1, TAIL_STEPS, 4))  # (1, TAIL_STEPS, 4)
    with torch.no_grad():
        expected = [voice[0].numpy() for voice in vae.decode(z, cond, tokens, tail)]
    bar = decoder.bar(z[0].numpy(), decoder.condition(4, 3, 1, 0, style[0].numpy(), 2), 2, root=4)
    sequence = torch.cat([tail[0], tokens[0]]).numpy()
    for step in range(STEPS_PER_BAR):
        earlier = sequence[TAIL_STEPS + step - np.array(CONTEXT_OFFSETS)]
        last_pitch = np.full(3, -1)
        for voice in range(3):
            onsets = np.flatnonzero(sequence[:TAIL_STEPS + step, voice] >= 2)
            if onsets.size:
                last_pitch[voice] = sequence[onsets[-1], voice] - 2
        pitched, drums = decoder.step_logits(bar, step, earlier, last_pitch)
        assert pitched.dtype == np.float32 and drums.dtype == np.float32
        for voice in range(3):
            np.testing.assert_allclose(expected[voice][step], pitched[voice], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(expected[3][step], drums, rtol=1e-4, atol=1e-4)


def test_lstm_shapes_losses_and_fast_copy():
    _, lstm = debug_models(seed=1)
    batch, steps, latent = 3, 5, DEBUG_LSTM.latent_dim
    latents = torch.randn(batch, steps + 1, latent)
    chords = torch.randint(0, N_CHORDS, (batch, steps + 1))
    style = F.one_hot(torch.tensor([0, 1, 2]), 3).float()
    mode = torch.tensor([0, 1, 0])
    chord_nll, latent_nll, mask = sequence_losses(lstm, latents, chords, style, mode, torch.tensor([True, False, True]),
                                                  torch.tensor([5, 3, 1]))
    assert chord_nll.shape == latent_nll.shape == mask.shape == (batch, steps)
    assert mask.sum() == 9

    # The numpy copy and torch's one-bar step agree, from a song start on.
    fast = FastLSTM.from_module(lstm)
    state_t, state_f = lstm.initial_state(), fast.initial_state()
    z = torch.randn(latent)
    chord = chord_index(9, 4)
    for latent_in in (None, z, z * 0.5):
        state_t, out_t = lstm.step(state_t, latent_in, chord, style[0], 1)
        state_f, out_f = fast.step(state_f, None if latent_in is None else latent_in.numpy(), chord,
                                   style[0].numpy(), 1)
        np.testing.assert_allclose(out_t.numpy(), out_f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lstm.chord_logits(out_t).numpy(), fast.chord_logits(out_f), rtol=1e-4, atol=1e-5)
    mu_t, logvar_t = lstm.latent_distribution(out_t, chord)
    mu_f, logvar_f = fast.latent_distribution(out_f, chord)
    np.testing.assert_allclose(mu_t.numpy(), mu_f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logvar_t.numpy(), logvar_f, rtol=1e-4, atol=1e-5)
    assert state_t.started and state_t.clone().h is not state_t.h


def test_sampling_with_temperature_and_mask():
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 1.0, 5.0, 2.0])
    assert sample_from_logits(logits, 0.0, rng) == 2
    allowed = np.array([True, True, False, True])
    draws = {sample_from_logits(logits, 1.0, rng, allowed) for _ in range(200)}
    assert 2 not in draws and draws <= {0, 1, 3}
    hot = [sample_from_logits(logits, 5.0, rng) for _ in range(300)]
    assert len(set(hot)) == 4


def test_layout_shapes_are_the_modules_state_dicts():
    """models.layout (what checkpoints are checked against without torch) describes every tensor
    of the torch modules, for the debug, the default and a two-layer configuration."""
    for config in (DEBUG_VAE, VAEConfig(), VAEConfig(cond_dim=13, embed_dim=5, base_rank=7)):
        state = BarVAE(config).state_dict()
        assert vae_shapes(config) == {name: tuple(tensor.shape) for name, tensor in state.items()}
    for config in (DEBUG_LSTM, LSTMConfig(), LSTMConfig(num_layers=2, hidden_dim=24, chord_embed_dim=5)):
        state = BarLSTM(config).state_dict()
        assert lstm_shapes(config) == {name: tuple(tensor.shape) for name, tensor in state.items()}


def test_fast_lstm_with_two_layers_matches_torch():
    torch.manual_seed(6)
    lstm = BarLSTM(LSTMConfig(latent_dim=8, num_layers=2, hidden_dim=24, chord_embed_dim=5, dropout=0.0)).eval()
    fast = FastLSTM.from_module(lstm)
    state_t, state_f = lstm.initial_state(), fast.initial_state()
    style = torch.tensor([0.2, 0.5, 0.3])
    for latent_in in (None, torch.randn(8), torch.randn(8)):
        state_t, out_t = lstm.step(state_t, latent_in, chord_index(2, 4), style, 0)
        state_f, out_f = fast.step(state_f, None if latent_in is None else latent_in.numpy(), chord_index(2, 4),
                                   style.numpy(), 0)
        np.testing.assert_allclose(out_t.numpy(), out_f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state_t.c[:, 0].numpy(), state_f.c, rtol=1e-4, atol=1e-5)


def test_openmp_threads_wait_passively_unless_the_operator_says_otherwise():
    import os
    import subprocess
    import sys

    probe = "import os, sys; import models.train; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE True"), ("ACTIVE", "ACTIVE True")):
        run_env = env if given is None else {**env, "OMP_WAIT_POLICY": given}
        out = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[-2] == expected, out.stdout


def test_balanced_windows_repeat_the_rare_styles_by_their_bars():
    # Eight "lakh" songs of 10 bars, one NES song of 10, one lo-fi song of 3 (style indices of STYLES).
    lofi, nes = STYLES.index("lofi"), STYLES.index("nes")
    styles = [2] * 8 + [nes, lofi]
    lengths = [10] * 9 + [3]
    seqs = SongSequences(latents=[torch.zeros(n, 4) for n in lengths],
                         chords=[torch.zeros(n, dtype=torch.int64) for n in lengths],
                         style=F.one_hot(torch.tensor(styles), len(STYLES)).float(),
                         mode=torch.zeros(10, dtype=torch.int64))
    items = windows(seqs, 4, None)  # windows at bars 0, 4, 8 of the long songs, one of the short one
    balanced, repeats = balanced_windows(seqs, items, 4, floor=0.2, max_repeats=64)
    # 93 bars: NES brings 10 → round(0.2 * 93 / 10) = 2 repeats; lo-fi 3 bars → round(6.2) = 6 (counted
    # by bars, not by windows: its one window would give round(0.2 * 25 / 1) = 5).
    assert repeats == {lofi: 6, nes: 2, 2: 1}
    assert len(balanced) == len(items) + (2 - 1) * 3 + (6 - 1) * 1
    assert balanced.count((9, 0)) == 6 and balanced.count((8, 4)) == 2 and balanced.count((0, 0)) == 1
    _, capped = balanced_windows(seqs, items, 4, floor=0.9, max_repeats=3)
    assert capped[lofi] == 3
    unchanged, ones = balanced_windows(seqs, items, 4, floor=0.0, max_repeats=64)
    assert unchanged == items and set(ones.values()) == {1}
