"""`sa3 model pull` / `sa3 model list` and `--model NAME`, through the real huggingface_hub.

No mocks: a Hugging Face cache is built on disk in the layout huggingface_hub writes (blobs,
snapshot links, refs), and the hub is a small HTTP server on loopback that answers the requests
huggingface_hub makes (`/api/models/{repo}/revision/{rev}`, `/api/models/{repo}/tree/{rev}`,
HEAD and GET `/{repo}/resolve/{rev}/{file}`) with the hub's own status codes and error headers
(`X-Error-Code: GatedRepo`, `RepoNotFound`, ...); `HF_ENDPOINT` points the `sa3` command at it.
Every error is one line, exit 2, and leaves the cache as it was. Nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import forked_cli
from tests.conftest import SA3, sigint_as_at_a_terminal

COMMIT = "0123456789abcdef0123456789abcdef01234567"
NEWER = "fedcba9876543210fedcba9876543210fedcba98"
SAME_S_FILES = {
    "model_config.json": b'{"model_type": "autoencoder", "sample_rate": 44100}',
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "LICENSE": b"STABILITY AI COMMUNITY LICENSE AGREEMENT (test text)",
    "README.md": b"# SAME-S (test card)",
}
DIT_FILES = {
    "model_config.json": b'{"model_type": "diffusion_cond_inpaint"}',
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "LICENSE": b"STABILITY AI COMMUNITY LICENSE AGREEMENT (test text)",
    "t5gemma-b-b-ul2/config.json": b'{"model_type": "t5gemma"}',
    "t5gemma-b-b-ul2/model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "t5gemma-b-b-ul2/tokenizer.json": b"{}",
    "t5gemma-b-b-ul2/tokenizer_config.json": b"{}",
}
NOT_NEEDED = {  # in the repo, but not what sa3 runs: a pull must leave them on the hub
    "training/last.ckpt": b"x" * 64,
    "optimized/model.tflite": b"y" * 64,
}


# ---------------------------------------------------------------------------------- environment


def hf_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with a fresh Hugging Face home in tmp_path: no token, no proxy,
    no telemetry; HF_HUB_CACHE is tmp_path/hub unless ``extra`` says otherwise."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING_FACE_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )
    env.update(extra)
    return env


def sa3(env: dict[str, str], *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return forked_cli.run(list(args), cwd=cwd, env=env)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sa3: error: "), result.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes | str]:
    """Everything under ``folder``: files with their bytes, links with their targets, folders."""
    found: dict[str, bytes | str] = {}
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = path.read_bytes()
    return found


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """A repo in the cache as huggingface_hub leaves it: content-addressed blobs, a snapshot of
    relative links to them, refs/main naming the commit (no newline). Returns the snapshot."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for name, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return snapshot


# ---------------------------------------------------------------------------------- a hub on loopback


class FakeHub:
    """The Hugging Face Hub's download API for a few repos, on 127.0.0.1. ``repos`` maps a repo id to
    {"files": {path: bytes}, "commit": sha, "gated": False or "auto", "missing": set of paths the
    resolve endpoint answers 404 for, "sizes": {path: size the API claims}}; ``granted`` are the tokens
    that may read gated repos. ``requests`` records (method, path) of every request."""

    def __init__(self, repos: dict[str, dict], granted: tuple[str, ...] = ()) -> None:
        self.repos, self.granted, self.requests = repos, granted, []
        self.trickling = threading.Event()  # set when a slow download has begun
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.answer(self, head=False)

            def do_HEAD(self):
                hub.answer(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def send(handler, status: int, body: bytes = b"", head: bool = False, **headers: str) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def trickle(self, handler, data: bytes, commit: str) -> None:
        """Send the headers and the first bytes, then the rest at a byte a tenth of a second."""
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{sha(data)}"')
        handler.end_headers()
        handler.wfile.write(data[:4])
        handler.wfile.flush()
        self.trickling.set()
        try:
            for i in range(4, len(data)):
                time.sleep(0.1)
                handler.wfile.write(data[i : i + 1])
                handler.wfile.flush()
        except OSError:  # the client went away
            pass

    def send_json(self, handler, data, head: bool = False) -> None:
        self.send(handler, 200, json.dumps(data).encode(), head, Content_Type="application/json")

    def not_found(self, handler, repo_id: str, head: bool = False) -> None:
        self.send(
            handler,
            404,
            b'{"error": "Repository not found"}',
            head,
            X_Error_Code="RepoNotFound",
            X_Error_Message="Repository not found",
        )

    def answer(self, handler, head: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append(("HEAD" if head else "GET", handler.path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            repo = self.repos.get(repo_id)
            if repo is None:
                return self.not_found(handler, repo_id, head)
            revision = rest[1] if len(rest) > 1 else "main"
            if revision not in ("main", repo["commit"]):
                return self.send(handler, 404, b"{}", head, X_Error_Code="RevisionNotFound")
            if rest[:1] in ([], ["revision"]):
                siblings = [
                    {"rfilename": p, "size": repo.get("sizes", {}).get(p, len(d)), "blobId": sha(d)}
                    for p, d in repo["files"].items()
                ]
                info = {
                    "id": repo_id,
                    "sha": repo["commit"],
                    "gated": repo.get("gated", False),
                    "private": False,
                    "siblings": siblings,
                }
                return self.send_json(handler, info, head)
            if rest[:1] == ["tree"]:
                entries = [{"type": "file", "path": p, "size": len(d), "oid": sha(d)} for p, d in repo["files"].items()]
                return self.send_json(handler, entries, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = self.repos.get(repo_id)
            if repo is None:
                return self.not_found(handler, repo_id, head)
            if repo.get("gated"):
                auth = handler.headers.get("authorization", "")
                if not auth:
                    return self.send(
                        handler,
                        401,
                        b"{}",
                        head,
                        X_Error_Code="GatedRepo",
                        X_Error_Message=f"Access to model {repo_id} is restricted. You must have access "
                        "to it and be authenticated to access it. Please log in.",
                    )
                if auth.removeprefix("Bearer ") not in self.granted:
                    return self.send(
                        handler,
                        403,
                        b"{}",
                        head,
                        X_Error_Code="GatedRepo",
                        X_Error_Message=f"Access to model {repo_id} is restricted and you are not in "
                        "the authorized list.",
                    )
            if name not in repo["files"] or name in repo.get("missing", ()):
                return self.send(handler, 404, b"{}", head, X_Error_Code="EntryNotFound", X_Repo_Commit=repo["commit"])
            data = repo["files"][name]
            if not head and name in repo.get("slow", ()):  # a long download: headers, a trickle, then hang on
                return self.trickle(handler, data, repo["commit"])
            return self.send(
                handler,
                200,
                data,
                head,
                X_Repo_Commit=repo["commit"],
                ETag=f'"{sha(data)}"',
                Content_Type="application/octet-stream",
            )
        return self.send(handler, 404, b"{}", head)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub():
    hubs = []

    def start(repos: dict[str, dict], granted: tuple[str, ...] = ()) -> FakeHub:
        hubs.append(FakeHub(repos, granted))
        return hubs[-1]

    yield start
    for started in hubs:
        started.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- list and --model NAME


def test_list_shows_the_default_first_then_the_cached_models_offline(tmp_path):
    same_s = cache_repo(tmp_path / "hub", "stabilityai/SAME-S", SAME_S_FILES)
    small = cache_repo(
        tmp_path / "hub",
        "stabilityai/stable-audio-3-small-music",
        {k: DIT_FILES[k] for k in ("model_config.json", "model.safetensors")},
    )
    env = hf_env(tmp_path, HF_HUB_OFFLINE="1")
    result = sa3(env, "model", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("default ") and "sa3core/assets/default" in lines[0]
    (same_line,) = [line for line in lines if line.startswith("same-s ")]
    assert "stabilityai/SAME-S" in same_line and str(same_s) in same_line
    assert "Stability AI Community License" in same_line and "Gemma" not in same_line
    (small_line,) = [line for line in lines if line.startswith("small-music ")]
    assert str(small) in small_line and "incomplete: no t5gemma-b-b-ul2/config.json" in small_line
    assert "Gemma Terms of Use" in small_line
    assert any(line.startswith("not downloaded: small-sfx, medium,") for line in lines)

    listed = json.loads(sa3(env, "model", "list", "--json").stdout)
    assert [m["name"] for m in listed["models"]] == ["default", "small-music", "same-s"]
    same = listed["models"][2]
    assert same["path"] == str(same_s) and same["commit"] == COMMIT and same["missing"] == []
    assert same["size_bytes"] == sum(len(d) for d in SAME_S_FILES.values())
    assert listed["cache"] == str(tmp_path / "hub")


def test_list_with_nothing_downloaded_and_no_cache_folder(tmp_path):
    result = sa3(hf_env(tmp_path), "model", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("default ")
    assert "not downloaded: small-music," in result.stdout
    assert not (tmp_path / "hub").exists() and not (tmp_path / "hf-home").exists()


def test_a_name_resolves_from_the_cache_without_the_network(tmp_path, hub):
    """HF_HOME alone places the cache (HF_HUB_CACHE unset); no request reaches the hub, even online."""
    snapshot = cache_repo(tmp_path / "hf-home" / "hub", "stabilityai/SAME-S", SAME_S_FILES)
    server = hub({})
    env = hf_env(tmp_path, HF_ENDPOINT=server.endpoint)
    del env["HF_HUB_CACHE"]
    code = (
        "from sa3core.hub import resolve_model\n"
        "for name in ('same-s', 'SAME-S', 'stabilityai/SAME-S', 'same-s@main', None):\n"
        "    print(resolve_model(name))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(snapshot)] * 4 + ["None"]
    assert server.requests == []


def test_generate_takes_a_released_name_offline(tmp_path):
    """`--model same-s` reaches the model loader with the cached snapshot folder (the folder is
    what the loader then reads or names in its error); the name is never an error of its own."""
    snapshot = cache_repo(tmp_path / "hub", "stabilityai/SAME-S", SAME_S_FILES)
    out = tmp_path / "take.wav"
    result = sa3(
        hf_env(tmp_path, HF_HUB_OFFLINE="1"),
        "generate",
        "x",
        "--seconds",
        "1",
        "--model",
        "same-s",
        "-o",
        out,
        "--quiet",
    )
    assert "unknown model" not in result.stderr and "is not in the Hugging Face cache" not in result.stderr
    assert result.returncode == 0 or (result.returncode == 2 and COMMIT in result.stderr), result.stderr
    assert snapshot.is_dir()


def test_a_folder_keeps_working_and_wins_over_a_name(tmp_path, tiny_model_dir):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "same-s").symlink_to(tiny_model_dir, target_is_directory=True)
    code = f"from sa3core.hub import resolve_model; print(resolve_model('same-s')); print(resolve_model({str(tiny_model_dir)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=hf_env(tmp_path),
        cwd=tmp_path / "work",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["same-s", str(tiny_model_dir)]


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "x", "--seconds", "1", "-o", "{out}"],
        ["inpaint", "{wav}", "x", "--region", "0:0.5", "-o", "{out}"],
        ["continue", "{wav}", "x", "--seconds", "1", "-o", "{out}"],
        ["render", "{sheet}", "-o", "{outdir}"],
        ["eval", "--folder", "{tmp}"],
        ["serve", "--bind", "tcp://127.0.0.1:*"],
        ["info"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_says_how_to_pull_a_name_not_in_the_cache(tmp_path, command):
    from sa3core.audio import save_audio
    from tests.conftest import stereo_tone

    save_audio(tmp_path / "in.wav", stereo_tone(1.0), 44_100)
    (tmp_path / "sheet.yaml").write_text("jobs:\n  - name: a\n    prompt: kick\n    seconds: 1\n")
    fill = {
        "out": tmp_path / "out.wav",
        "wav": tmp_path / "in.wav",
        "sheet": tmp_path / "sheet.yaml",
        "outdir": tmp_path / "rendered",
        "tmp": tmp_path,
    }
    args = [part.format(**fill) for part in command] + ["--model", "small-music"]
    before = tree(tmp_path)
    line = one_line_error(sa3(hf_env(tmp_path, HF_HUB_OFFLINE="1"), *args))
    assert "small-music is not in the Hugging Face cache" in line
    assert "run `sa3 model pull small-music` with HF_HUB_OFFLINE unset" in line
    assert "accept its licence at https://huggingface.co/stabilityai/stable-audio-3-small-music" in line
    assert tree(tmp_path) == before


def test_an_incomplete_cached_copy_says_to_pull_again(tmp_path):
    cache_repo(
        tmp_path / "hub",
        "stabilityai/stable-audio-3-medium",
        {k: DIT_FILES[k] for k in ("model_config.json", "model.safetensors")},
    )
    line = one_line_error(
        sa3(hf_env(tmp_path), "generate", "x", "--seconds", "1", "--model", "medium", "-o", tmp_path / "a.wav")
    )
    assert "the cached copy of medium" in line and "(no t5gemma-b-b-ul2/config.json)" in line
    assert "run `sa3 model pull medium` to complete it" in line
    assert not (tmp_path / "a.wav").exists()


def test_an_unknown_name_lists_the_known_ones(tmp_path):
    line = one_line_error(
        sa3(hf_env(tmp_path), "generate", "x", "--seconds", "1", "--model", "smal-music", "-o", tmp_path / "a.wav")
    )
    assert "unknown model 'smal-music'" in line
    assert "small-music, small-sfx, medium, small-music-base, small-sfx-base, medium-base, same-s, same-l" in line
    line = one_line_error(sa3(hf_env(tmp_path), "model", "pull", "same-xl"))
    assert "unknown model 'same-xl'" in line and "same-s, same-l" in line
    assert not (tmp_path / "hub").exists()


# ---------------------------------------------------------------------------------- pull


def test_pull_downloads_what_sa3_needs_shows_the_licence_once_and_resolves(tmp_path, hub):
    server = hub({"stabilityai/SAME-S": {"files": {**SAME_S_FILES, **NOT_NEEDED}, "commit": COMMIT}})
    env = hf_env(tmp_path, HF_ENDPOINT=server.endpoint)
    first = sa3(env, "model", "pull", "same-s")
    assert first.returncode == 0, first.stderr
    assert "same-s (stabilityai/SAME-S) is released under:" in first.stdout
    assert "Stability AI Community License: https://stability.ai/license" in first.stdout
    assert "Gemma" not in first.stdout  # SAME has no text encoder
    snapshot = tmp_path / "hub" / "models--stabilityai--SAME-S" / "snapshots" / COMMIT
    assert f"in {snapshot}" in first.stdout and "use it with --model same-s" in first.stdout
    assert "licence texts: LICENSE" in first.stdout
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(SAME_S_FILES)
    assert all((snapshot / name).read_bytes() == data for name, data in SAME_S_FILES.items())
    asked = {path.split("/resolve/")[1].split("/", 1)[1] for _, path in server.requests if "/resolve/" in path}
    assert asked == set(SAME_S_FILES)  # the checkpoint's other files stay on the hub
    assert (snapshot.parents[1] / "refs" / "main").read_text() == COMMIT

    again = sa3(env, "model", "pull", "same-s", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "released under" not in again.stdout and f"in {snapshot}" in again.stdout
    env["HF_HUB_OFFLINE"] = "1"
    listed = json.loads(sa3(env, "model", "list", "--json").stdout)
    assert [(m["name"], m["path"]) for m in listed["models"][1:]] == [("same-s", str(snapshot))]


def test_pull_of_a_gated_model_with_access_gets_the_text_encoder_and_the_gemma_terms(tmp_path, hub):
    repo = "stabilityai/stable-audio-3-small-music"
    server = hub({repo: {"files": {**DIT_FILES, **NOT_NEEDED}, "commit": COMMIT, "gated": "auto"}}, granted=("hf_ok",))
    result = sa3(hf_env(tmp_path, HF_ENDPOINT=server.endpoint, HF_TOKEN="hf_ok"), "model", "pull", "small-music")
    assert result.returncode == 0, result.stderr
    assert "Gemma Terms of Use (the T5Gemma text encoder): https://ai.google.dev/gemma/terms" in result.stdout
    snapshot = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT
    assert sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if not p.is_dir()) == sorted(DIT_FILES)


def test_pull_of_a_gated_model_without_a_token(tmp_path, hub):
    repo = "stabilityai/stable-audio-3-medium"
    server = hub({repo: {"files": DIT_FILES, "commit": COMMIT, "gated": "auto"}})
    line = one_line_error(sa3(hf_env(tmp_path, HF_ENDPOINT=server.endpoint), "model", "pull", "medium"))
    assert f"{repo} is gated and you are not logged in to Hugging Face" in line
    assert f"accept its licence at {server.endpoint}/{repo}" in line and "`hf auth login`" in line
    assert tree(tmp_path) == {}


def test_pull_of_a_gated_model_whose_licence_was_not_accepted(tmp_path, hub):
    """The hub lists the repo and its files, then refuses each file (403 GatedRepo): by then
    huggingface_hub has written the ref and the tree listing, and the pull takes them back."""
    repo = "stabilityai/stable-audio-3-small-sfx"
    server = hub({repo: {"files": DIT_FILES, "commit": COMMIT, "gated": "auto"}}, granted=("someone-else",))
    env = hf_env(tmp_path, HF_ENDPOINT=server.endpoint, HF_TOKEN="hf_not_accepted")
    line = one_line_error(sa3(env, "model", "pull", "small-sfx", "--quiet"))
    assert f"your Hugging Face account has no access to {repo} yet" in line
    assert f"accept its licence at {server.endpoint}/{repo}" in line
    assert any("/resolve/" in path for _, path in server.requests)  # it got as far as the files
    assert tree(tmp_path) == {}


def test_pull_of_a_repo_the_hub_does_not_have(tmp_path, hub):
    server = hub({})
    line = one_line_error(sa3(hf_env(tmp_path, HF_ENDPOINT=server.endpoint), "model", "pull", "same-l"))
    assert f"stabilityai/SAME-L was not found on {server.endpoint}" in line
    assert tree(tmp_path) == {}


def test_pull_of_a_revision_the_repo_does_not_have(tmp_path, hub):
    server = hub({"stabilityai/SAME-S": {"files": SAME_S_FILES, "commit": COMMIT}})
    env = hf_env(tmp_path, HF_ENDPOINT=server.endpoint)
    line = one_line_error(sa3(env, "model", "pull", "same-s", "--revision", "v9"))
    assert "stabilityai/SAME-S has no revision 'v9'" in line
    assert tree(tmp_path) == {}


def test_pull_without_network(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    line = one_line_error(sa3(hf_env(tmp_path, HF_ENDPOINT=endpoint), "model", "pull", "small-music"))
    assert f"cannot reach {endpoint} to download small-music" in line and "Connection refused" in line
    assert tree(tmp_path) == {}


def test_pull_with_hf_hub_offline(tmp_path):
    line = one_line_error(sa3(hf_env(tmp_path, HF_HUB_OFFLINE="1"), "model", "pull", "same-s"))
    assert "HF_HUB_OFFLINE is set" in line
    assert tree(tmp_path) == {}


def test_pull_that_does_not_fit_on_the_disk(tmp_path, hub):
    files = {**SAME_S_FILES}
    server = hub({"stabilityai/SAME-S": {"files": files, "commit": COMMIT, "sizes": {"model.safetensors": 10**18}}})
    line = one_line_error(sa3(hf_env(tmp_path, HF_ENDPOINT=server.endpoint), "model", "pull", "same-s"))
    assert "same-s needs 1,000,000.0 TB" in line and "free some space or set HF_HUB_CACHE" in line
    assert not any("/resolve/" in path for _, path in server.requests)
    assert tree(tmp_path) == {}


def test_a_failed_update_keeps_the_installed_copy(tmp_path, hub):
    """A newer commit on the hub whose weights cannot be fetched: the pull fails after moving
    refs/main and fetching some files; the cache ends exactly as before and the name still resolves."""
    old = cache_repo(tmp_path / "hub", "stabilityai/SAME-S", SAME_S_FILES)
    newer = {**SAME_S_FILES, "model_config.json": b'{"model_type": "autoencoder", "v": 2}'}
    server = hub({"stabilityai/SAME-S": {"files": newer, "commit": NEWER, "missing": {"model.safetensors"}}})
    env = hf_env(tmp_path, HF_ENDPOINT=server.endpoint)
    before = tree(tmp_path)
    line = one_line_error(sa3(env, "model", "pull", "same-s", "--quiet"))
    assert f"{server.endpoint} answered 404 while downloading stabilityai/SAME-S" in line
    assert tree(tmp_path) == before
    code = "from sa3core.hub import resolve_model; print(resolve_model('same-s'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == str(old)


def test_ctrl_c_during_a_pull_leaves_nothing(tmp_path, hub):
    """SIGINT while the weights are downloading: exit 130 at once (not when the download would have
    finished), and neither the partial blob nor the files already fetched, the ref or the tree
    listing stay in the cache."""
    weights = b"w" * 600  # a minute at the trickle's rate
    files = {**SAME_S_FILES, "model.safetensors": weights}
    server = hub({"stabilityai/SAME-S": {"files": files, "commit": COMMIT, "slow": {"model.safetensors"}}})
    process = subprocess.Popen(
        [*SA3, "model", "pull", "same-s", "--quiet"],
        env=hf_env(tmp_path, HF_ENDPOINT=server.endpoint),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_at_a_terminal,
    )
    try:
        assert server.trickling.wait(60), "the download never started"
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        assert time.monotonic() - interrupted < 20
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "sa3: interrupted"
    assert tree(tmp_path) == {}
