from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phonemekit.data.splits import leaky_split, loso_folds, speaker_disjoint

names = st.lists(st.text("abcdefghijklmnop0123456789", min_size=1, max_size=8), min_size=3, max_size=30, unique=True)


@given(names, st.dictionaries(st.text("ab", min_size=1, max_size=1), st.sampled_from(["child", "adult"])))
def test_speaker_disjoint_parts_never_share_a_speaker(speakers, groups):
    s = speaker_disjoint(speakers, {k: v for k, v in groups.items() if k in speakers})
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(speakers)
    assert s.test and s.val and s.train


def test_split_is_stable_and_order_independent():
    spk = [f"s{i}" for i in range(16)]
    assert speaker_disjoint(spk) == speaker_disjoint(list(reversed(spk)))


def test_split_puts_each_group_in_test():
    spk = [f"a{i}" for i in range(12)] + [f"c{i}" for i in range(4)]
    s = speaker_disjoint(spk, {f"c{i}": "child" for i in range(4)})
    assert any(x.startswith("c") for x in s.test) and any(x.startswith("a") for x in s.test)


@given(names)
def test_loso_folds_never_leak_a_speaker(speakers):
    folds = loso_folds(speakers)
    assert sorted(f.test[0] for f in folds) == sorted(speakers)
    for f in folds:
        assert f.test[0] not in f.train and f.test[0] not in f.val
        assert not set(f.train) & set(f.val)


def test_leaky_split_mixes_speakers():
    rows = [{"speaker": f"s{i % 4}"} for i in range(200)]
    parts = leaky_split(rows)
    spk = lambda p: {rows[i]["speaker"] for i in parts[p]}  # noqa: E731
    assert spk("train") & spk("test")
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(200))


def test_loso_folds_can_hold_out_one_group_only():
    folds = loso_folds([f"a{i}" for i in range(6)] + ["c1", "c2"], held_out=["c1", "c2"])
    assert [f.test for f in folds] == [("c1",), ("c2",)]
    assert all("c2" in f.train + f.val for f in folds if f.test == ("c1",))
