"""A real OpenAI-compatible server for the tests: llama-cpp-python's own
(`python -m llama_cpp.server`, the optional `llama` extra), on 127.0.0.1, serving the
tiny chat and embedding models tests/tinygguf.py writes, by the names CHAT_MODEL and
EMBEDDING_MODEL, and the chat model as an embedding model without pooling by
UNPOOLED_MODEL (one config file; the server loads whichever model a request names).
Tests that need it skip, saying why, where the extra is not installed."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.service import free_port, wait_for
from tests.tinygguf import N_CTX, N_EMBD, write_models

CHAT_MODEL = "tiny-chat"
EMBEDDING_MODEL = "tiny-embed"
#: The chat model served for embeddings: no pooling, so one vector per token.
UNPOOLED_MODEL = "tiny-chat-unpooled"
EMBEDDING_SIZE = N_EMBD
#: Any key: the server is started with it and refuses others.
API_KEY = "sk-local-llama-cpp-test"
START_SECONDS = 120


def missing() -> str | None:
    """Why the real server cannot run here, or None when it can."""
    for module in ("llama_cpp", "gguf", "uvicorn", "fastapi", "sse_starlette"):
        if importlib.util.find_spec(module) is None:
            return (
                f"{module} is not installed: install the llama extra "
                "(pip install -e '.[test,llama]') to test against llama-cpp-python's server"
            )
    return None


class LlamaServer:
    """`start()` writes the models into `directory` and starts the server; `stop()`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / "llama-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def config(self) -> dict:
        chat, embed = write_models(self.directory)
        common = {"n_threads": 1, "n_threads_batch": 1, "verbose": False}
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "api_key": API_KEY,
            "models": [
                {"model": str(chat), "model_alias": CHAT_MODEL, "chat_format": "chatml",
                 "n_ctx": N_CTX, **common},
                {"model": str(embed), "model_alias": EMBEDDING_MODEL, "embedding": True,
                 "n_ctx": 2048, "n_batch": 2048, "n_ubatch": 2048, **common},
                {"model": str(chat), "model_alias": UNPOOLED_MODEL, "embedding": True,
                 "n_ctx": 2048, **common},
            ],
        }  # fmt: skip

    def start(self) -> LlamaServer:
        path = self.directory / "llama-server.json"
        path.write_text(json.dumps(self.config(), indent=2))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--config_file", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        wait_for(self.ready, START_SECONDS, "llama-cpp-python's server", interval=0.2)
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"llama-cpp-python's server exited:\n{self.logs()[-3000:]}")
        request = urllib.request.Request(
            f"{self.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
