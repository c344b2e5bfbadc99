from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from phonemekit.models import decoding
from phonemekit.models.decoding import class_log_probs, ctc_single_label_log_likelihood, greedy, log_cumsumexp, prefix_beam_search


def _posteriors(frames: list[dict[int, float]], k: int) -> torch.Tensor:
    """Hand-built per-frame distributions over k tokens (rest share what is left)."""
    out = []
    for f in frames:
        p = np.full(k, (1 - sum(f.values())) / (k - len(f)))
        for tok, v in f.items():
            p[tok] = v
        out.append(np.log(p))
    return torch.tensor(np.array(out), dtype=torch.float32)[None]


def test_greedy_collapses_repeats_and_drops_blanks():
    blank = 3
    lp = _posteriors([{3: 0.9}, {1: 0.9}, {1: 0.9}, {3: 0.9}, {1: 0.9}, {0: 0.9}, {0: 0.9}], 4)
    assert greedy(lp, torch.tensor([7]), blank) == [[1, 1, 0]]
    assert greedy(lp, torch.tensor([3]), blank) == [[1]]


def test_prefix_beam_search_prefers_the_summed_prefix():
    # Greedy path is blank,blank (empty) but "0" has more total mass.
    lp = _posteriors([{0: 0.4, 2: 0.45}, {0: 0.4, 2: 0.45}], 3)[0].numpy()
    best = prefix_beam_search(lp, blank=2, beam=5)
    assert best[0][0] == (0,)
    assert np.isclose(np.exp(best[0][1]), 0.4 * 0.4 + 0.4 * 0.45 * 2, atol=1e-6)


def test_single_label_likelihood_matches_ctc_loss():
    torch.manual_seed(0)
    b, t, c = 4, 15, 6
    lp = torch.log_softmax(torch.randn(b, t, c + 1) * 2, -1)
    lengths = torch.tensor([15, 9, 2, 1])
    got = ctc_single_label_log_likelihood(lp, lengths, blank=c)
    for i in range(b):
        for k in range(c):
            ref = -F.ctc_loss(lp[i : i + 1, : lengths[i]].transpose(0, 1), torch.tensor([[k]]), lengths[i : i + 1], torch.tensor([1]), blank=c, reduction="sum")
            assert torch.allclose(got[i, k], ref, atol=1e-3), (i, k)


def test_long_confident_clips_match_ctc_loss():
    # 300 frames of very peaked posteriors: prefix sums span thousands of nats,
    # far past what a single shifted exp/cumsum could hold in float32.
    torch.manual_seed(2)
    t, c = 300, 5
    logits = torch.randn(2, t, c + 1) * 12
    logits[0, 100:180, 2] += 40  # a long, sure stretch of class 2
    lp = torch.log_softmax(logits, -1)
    lengths = torch.tensor([300, 257])
    got = ctc_single_label_log_likelihood(lp, lengths, blank=c)
    for i in range(2):
        n = int(lengths[i])
        for k in range(c):
            ref = -F.ctc_loss(lp[i : i + 1, :n].double().transpose(0, 1), torch.tensor([[k]]), lengths[i : i + 1], torch.tensor([1]), blank=c, reduction="sum")
            assert torch.isfinite(got[i, k])
            if torch.isfinite(ref):
                assert abs(float(got[i, k]) - float(ref)) <= 1e-5 * max(1.0, abs(float(ref))) + 1e-2, (i, k, got[i, k], ref)
    assert got[0].argmax() == 2


def test_log_cumsumexp_matches_torch_and_extra_steps_change_nothing():
    torch.manual_seed(3)
    x = torch.randn(3, 4, 37) * 500
    ref = torch.logcumsumexp(x.double(), -1)
    exact = log_cumsumexp(x, decoding._scan_steps(37))
    padded_steps = log_cumsumexp(x, 9)  # an exported graph runs the steps for its longest clip
    assert torch.allclose(exact.double(), ref, rtol=1e-6, atol=1e-3)
    assert torch.equal(exact, padded_steps)
    assert decoding._scan_steps(1) == 0 and decoding._scan_steps(2) == 1 and decoding._scan_steps(100) == 7


def test_padding_does_not_change_scores():
    torch.manual_seed(1)
    lp = torch.log_softmax(torch.randn(1, 8, 5), -1)
    padded = torch.cat([lp, torch.log_softmax(torch.randn(1, 6, 5), -1)], 1)
    a = ctc_single_label_log_likelihood(lp, torch.tensor([8]), 4)
    b = ctc_single_label_log_likelihood(padded, torch.tensor([8]), 4)
    assert torch.allclose(a, b, atol=1e-4)


def test_class_scores_are_not_time_averages():
    # One confident frame of class 0 among blanks: averaging log-probs over
    # time would favour class 1, which is mildly present everywhere but never
    # beats the blank; the CTC likelihood correctly picks class 0.
    blank = 2
    frames = [{2: 0.6, 1: 0.39}] * 9 + [{0: 0.98}]
    lp = _posteriors(frames, 3)
    avg = lp[0].mean(0)
    assert avg[1] > avg[0]
    probs = class_log_probs(lp, torch.tensor([10]), "ctc", blank).exp()[0]
    assert probs.argmax() == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
