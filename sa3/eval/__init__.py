"""`sa3 eval`: measurements of a model's quality (docs/eval.md).

- :mod:`.metrics`   signal metrics: log-mel L1, MR-STFT, SI-SDR, border jumps, one-shot endings
- :mod:`.music`     key, tempo and meter estimators
- :mod:`.embed`     fixed clip embedding, Fréchet distance, pairwise distances
- :mod:`.codec_ref` the Opus reference (ffmpeg + libopus)
- :mod:`.runner`    the evaluation run behind the command
"""
