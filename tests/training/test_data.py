"""Manifest validation, audio crops + length buckets, latent encoding and batches (training/data.py)."""

import json

import pytest
import torch

from sa3core import timebase
from sa3core.errors import Sa3Error
from training.data import (
    AudioClips,
    CropConfig,
    LatentCorpus,
    LatentCropConfig,
    LengthBuckets,
    collate_audio,
    encode_manifest,
    has_envelope,
    load_batch,
    plan_batch,
    read_manifest,
)
from training.smoke import build_latent_corpus, render_corpus


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    torch.manual_seed(0)
    return build_latent_corpus(tmp_path_factory.mktemp("corpus"), clips=6, max_seconds=3.0)


def _write(tmp_path, records):
    path = tmp_path / "m.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


GOOD = {"path": "a.wav", "caption": "kick", "seconds": 1.5, "licence": "CC0", "source": "me"}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**GOOD, "seconds": -1}, "line 2: field 'seconds'"),
        ({k: v for k, v in GOOD.items() if k != "caption"}, "line 2: field 'caption' is missing"),
        ({**GOOD, "colour": "red"}, "line 2: unknown field 'colour'"),
        ({**GOOD, "split": "dev"}, "line 2: field 'split'"),
        ({**GOOD, "bpm": "fast"}, "line 2: field 'bpm' has the wrong type"),
        ("{not json", "line 2: not valid JSON"),
    ],
)
def test_manifest_errors_name_line_and_field(tmp_path, record, message):
    with pytest.raises(Sa3Error, match=message):
        read_manifest(_write(tmp_path, [GOOD, record]))


def test_manifest_reads_tags_and_resolves_paths(tmp_path):
    path = _write(tmp_path, [{**GOOD, "bpm": 120, "key": "A minor", "tags": ["loop"], "split": "valid"}, GOOD])
    entries = read_manifest(path)
    assert entries[0].path == str(tmp_path / "a.wav")
    assert entries[0].tag_dict() == {"bpm": 120, "key": "A minor", "tags": ["loop"]}
    assert [e.split for e in read_manifest(path, split="train")] == ["train"]


def test_audio_crops_buckets_and_masks(tmp_path):
    manifest = render_corpus(tmp_path, clips=6, max_seconds=3.0)
    clips = AudioClips(read_manifest(manifest), CropConfig(max_seconds=2.0, min_seconds=0.5, silence_prob=1.0))
    lengths = [clips.nominal_samples(i) for i in range(len(clips))]
    buckets = LengthBuckets(lengths, batch_size=2, seed=0)
    seen = sorted(i for batch in buckets for i in batch)
    assert seen == list(range(6))
    # Batches hold neighbours in length order.
    ordered = sorted(lengths)
    slices = [ordered[k : k + 2] for k in range(0, 6, 2)]
    for batch in buckets:
        assert sorted(lengths[i] for i in batch) in slices
    # Two ranks split the batches without overlap.
    rank0 = {i for b in LengthBuckets(lengths, 2, 0, 0, 2) for i in b}
    rank1 = {i for b in LengthBuckets(lengths, 2, 0, 1, 2) for i in b}
    assert not rank0 & rank1 and len(rank0 | rank1) == 6
    batch = collate_audio([clips[i] for i in range(3)])
    assert batch["audio"].shape[0] == 3 and batch["audio"].shape[1] == 2
    for i in range(3):
        real = timebase.samples_to_frames(timebase.seconds_to_samples(batch["seconds"][i].item()))
        assert batch["frame_mask"][i].sum().item() == real
        assert batch["audio"].shape[2] <= timebase.seconds_to_samples(2.0)
    assert clips[0][0].shape == clips[0][0].shape  # same epoch, same crop
    assert torch.equal(clips[1][0], clips[1][0])


def test_encoded_corpus_round_trips_and_batches(corpus_dir):
    corpus = LatentCorpus(corpus_dir)
    assert len(corpus) == 6 and corpus.silence.shape == (timebase.LATENT_CHANNELS,)
    item = corpus.latents(0)
    assert item.shape == (timebase.LATENT_CHANNELS, corpus.frames[0])
    assert torch.equal(corpus.latents(0, 2, 3), item[:, 2:5])
    gen = torch.Generator().manual_seed(0)
    config = LatentCropConfig(max_seconds=2.0, min_seconds=0.5, silence_prob=1.0, silence_mean_seconds=1.0)
    extended = 0
    for _ in range(10):
        plans = plan_batch(corpus, 4, config, gen)
        batch = load_batch(corpus, plans)
        lengths = batch["frame_mask"].sum(1)
        for i, plan in enumerate(plans):
            assert lengths[i].item() == plan.frames + plan.silence
            assert plan.frames + plan.silence <= timebase.seconds_to_frames(2.0)
            if plan.silence:
                extended += 1
                tail = batch["latents"][i, :, plan.frames : plan.frames + plan.silence]
                assert torch.equal(tail, corpus.silence[:, None].expand_as(tail))
            assert not batch["latents"][i, :, lengths[i] :].any()  # padding is zeros
        assert torch.allclose(batch["seconds"], lengths.float() * timebase.SAMPLES_PER_FRAME / timebase.SAMPLE_RATE)
    assert extended > 0


def test_one_shots_are_never_cropped_and_loops_are(corpus_dir):
    """A one-shot (or a one-shot effect) always starts at its attack and runs to its end (or the
    crop limit); a loop is cropped to the batch's length at any start."""
    corpus = LatentCorpus(corpus_dir)
    corpus.items[0]["tags"] = {"kind": "one-shot"}
    corpus.items[1]["tags"] = {"kind": "sfx", "flavour": "recorded"}
    corpus.items[2]["tags"] = {"kind": "loop", "bpm": 120}
    config = LatentCropConfig(max_seconds=2.0, min_seconds=0.5, silence_prob=0.0)
    limit = timebase.seconds_to_frames(2.0)
    gen = torch.Generator().manual_seed(1)
    seen = {0: 0, 1: 0, 2: 0}
    loop_crops = set()
    for _ in range(60):
        for plan in plan_batch(corpus, 6, config, gen):
            if plan.index in (0, 1):
                assert plan.start == 0 and plan.frames == min(corpus.frames[plan.index], limit)
            if plan.index == 2:
                loop_crops.add((plan.start, plan.frames))
            seen[plan.index] = seen.get(plan.index, 0) + 1
    assert seen[0] and seen[1] and len(loop_crops) > 3
    assert corpus.frames[2] > 10 and any(frames < corpus.frames[2] for _, frames in loop_crops)
    assert not has_envelope({"kind": "sfx", "flavour": "texture"}) and not has_envelope({})
    # Stages recorded before the rule (configs/default/flow*.yaml) turn it off: one-shots crop too.
    config = LatentCropConfig(max_seconds=2.0, min_seconds=0.5, silence_prob=0.0, whole_one_shots=False)
    starts = {p.start for _ in range(60) for p in plan_batch(corpus, 6, config, gen) if p.index == 0}
    assert len(starts) > 1


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(Sa3Error, match="sa3 data encode"):
        LatentCorpus(tmp_path)


def test_inpaint_masks_follow_the_keep_convention():
    from training.masks import MaskConfig, random_inpaint_masks

    gen = torch.Generator().manual_seed(0)
    frame_mask = torch.ones(400, 40, dtype=torch.bool)
    frame_mask[::2, 25:] = False  # every other item is padded after 25 frames
    masks, kinds = random_inpaint_masks(frame_mask, MaskConfig(), gen)
    assert masks.shape == (400, 1, 40) and set(kinds) == {"none", "region", "regions", "continuation"}
    for mask, kind, real in zip(masks[:, 0], kinds, frame_mask):
        assert not mask[~real].any()  # padding is never "given"
        keep = mask[real]
        if kind == "none":
            assert not keep.any()
            continue
        assert keep.any() and not keep.all()  # something given, something to regenerate
        regenerated = (keep == 0).nonzero().flatten()
        if kind == "region":
            assert regenerated[-1] - regenerated[0] + 1 == len(regenerated)  # one contiguous span
        if kind == "continuation":
            assert regenerated[-1] == len(keep) - 1 and keep[0] == 1  # a kept prefix, a new tail
            assert regenerated[-1] - regenerated[0] + 1 == len(regenerated)


def test_data_encode_cli(tmp_path):
    from sa3.cli import main

    manifest = render_corpus(tmp_path / "audio", clips=3, max_seconds=1.0)
    assert main(["data", "encode", str(manifest), "-o", str(tmp_path / "latents")]) == 0
    corpus = LatentCorpus(tmp_path / "latents")
    assert [r["caption"] for r in corpus.items] == [e.caption for e in read_manifest(manifest)]
    assert main(["data", "encode", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "x")]) == 2


def _encode_counting(manifest, out, autoencoder, **kwargs):
    """encode_manifest, and how many clips the autoencoder really encoded (silence not counted)."""
    calls = []
    real_encode = autoencoder.encode
    autoencoder.encode = lambda audio: calls.append(audio.shape[-1]) or real_encode(audio)
    try:
        encode_manifest(manifest, out, autoencoder, autoencoder_name="tiny", progress=False, **kwargs)
    finally:
        del autoencoder.encode
    return len(calls) - 1


def test_encode_resumes_and_encodes_only_new_clips(tmp_path):
    """A grown corpus, an interrupted run and a copied folder encode only the clips with no
    latents yet, and give the same latents as encoding from scratch."""
    from training.smoke import tiny_autoencoder

    big = render_corpus(tmp_path / "big", clips=5, max_seconds=1.0)
    lines = big.read_text().splitlines(keepends=True)
    small = tmp_path / "big" / "small.jsonl"
    small.write_text("".join(lines[:3]))
    model = tiny_autoencoder(seed=0)

    assert _encode_counting(small, tmp_path / "lat", model, items_per_shard=2) == 3
    assert _encode_counting(small, tmp_path / "lat", model, items_per_shard=2) == 0  # all there
    assert _encode_counting(big, tmp_path / "lat", model, items_per_shard=2) == 2  # grown by two
    assert _encode_counting(big, tmp_path / "fresh", model, items_per_shard=2) == 5
    grown, fresh = LatentCorpus(tmp_path / "lat", split=None), LatentCorpus(tmp_path / "fresh", split=None)
    assert [r["caption"] for r in grown.items] == [e.caption for e in read_manifest(big)]
    for i in range(5):
        assert torch.equal(grown.latents(i), fresh.latents(i))
    index = json.loads((tmp_path / "lat" / "index.json").read_text())
    assert index["reused"] == 3 and {r["shard"] for r in index["items"]} == {
        p.name for p in (tmp_path / "lat").glob("shard_*.safetensors")
    }

    # An interrupted run leaves finished shards and no index: they count.
    (tmp_path / "fresh" / "index.json").unlink()
    (tmp_path / "fresh" / "shard_00002.safetensors").unlink()  # the last shard never got written
    assert _encode_counting(big, tmp_path / "fresh", model, items_per_shard=2) == 1

    # Another autoencoder's latents are never mixed in or deleted.
    with pytest.raises(Sa3Error, match="another autoencoder"):
        encode_manifest(big, tmp_path / "lat", tiny_autoencoder(seed=1), autoencoder_name="tiny", progress=False)
    assert LatentCorpus(tmp_path / "lat", split=None).items == grown.items
