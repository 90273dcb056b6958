"""Prompt ideas for ``GET /prompts`` (the clients' dice button): sa3's own generic pools, and a
LoRA's own pool where ``NAME.prompts.json`` sits beside it (:mod:`bridge.http.loras`).

A selected LoRA's bucket replaces the generic bucket of the same name; several selected LoRAs
fill that bucket together, each prompt once (compared case-insensitively), in the order named.
The prompts carry no tempo or key: the clients append ``, N bpm[, key]`` themselves.
"""

from __future__ import annotations

POOLS_VERSION = 1

GENERIC: dict[str, tuple[str, ...]] = {
    "generic": (
        "slow-burning synth pop with a gated snare and shimmering chords",
        "late-night jazz trio, upright bass walking under soft piano voicings",
        "dusty sampled soul loop with a lazy swung beat",
        "euphoric trance build with supersaw stabs and a rolling bassline",
        "minimal techno pulse with a filtered clap and metallic percussion",
        "warm bossa nova groove with nylon guitar and brushed snare",
        "dark cinematic drone with low brass swells and distant hits",
        "bright afrobeat groove with interlocking guitars and shakers",
        "hazy chillwave with detuned synths and a tape-warped drum machine",
        "heavy stoner rock riff, fuzz guitar and a slow pounding kit",
        "playful chiptune melody over a bouncy square-wave bass",
        "lush orchestral strings rising over a soft timpani roll",
    ),
    "instrumental": (
        "solo cello phrase, close-miked and expressive",
        "clean electric guitar arpeggios drenched in spring reverb",
        "felt piano chords with soft pedal noise",
        "analog bass synth sequence with a slowly opening filter",
        "muted trumpet melody over quiet vibraphone",
        "kalimba pattern with a gentle delay",
        "wurlitzer chords with a slight tremolo",
        "twelve-string acoustic strumming, bright and open",
        "sitar drone with a slow melodic improvisation",
        "pulsing arpeggiated pluck synth in a wide stereo field",
    ),
    "drums": (
        "crisp breakbeat with a ghost-note snare and open hats",
        "four-on-the-floor house kit with a shuffled shaker",
        "half-time trap pattern with rolling hi-hats and a booming 808",
        "live rock kit, roomy toms and a cracking snare",
        "jungle break chopped fast with a deep sub underneath",
        "dry funk drums with a tight kick and syncopated snare",
        "hand percussion ensemble, congas, bongos and claves",
        "lo-fi drum machine groove with saturated claps",
    ),
    "one_shots": (
        "single punchy kick drum with a short tail",
        "bright open hi-hat hit",
        "deep cinematic impact with a long reverb tail",
        "plucked synth stab, short and dry",
        "reversed cymbal swell",
        "vinyl scratch one-shot",
    ),
}


def dice(selected: list[str], pool_of) -> tuple[dict[str, list], dict[str, object], list[str]]:
    """The merged ``dice`` buckets for the LoRAs ``selected`` (lower case, in order), their
    ``source`` per bucket, and the selected names that have no pool. ``pool_of(name)`` returns a
    LoRA's buckets or None."""
    buckets = {name: list(items) for name, items in GENERIC.items()}
    source: dict[str, object] = {name: "sa3 generic" for name in buckets}
    seen: dict[str, set] = {}
    missing = []
    for lora in selected:
        pool = pool_of(lora)
        if pool is None:
            missing.append(lora)
            continue
        for bucket, items in pool.items():
            if bucket not in seen:  # the first LoRA with this bucket replaces the generic one
                buckets[bucket], source[bucket], seen[bucket] = [], [], set()
            for item in items:
                if not isinstance(item, str) or not item.strip() or item.lower() in seen[bucket]:
                    continue
                seen[bucket].add(item.lower())
                buckets[bucket].append(item)
            source[bucket].append(f"{lora}.prompts.json")
    if missing:
        source["_note"] = f"no prompt file for: {', '.join(missing)}"
    return buckets, source, missing
