"""Write the PyTorch reference fixtures that distill's Swift tests compare against.

Install (once; CPU-only torch is enough):
    python3 -m venv /work/venv-ref
    /work/venv-ref/bin/pip install torch transformers sentencepiece safetensors numpy

Run from the repository root (rewrites Tests/DistillTests/Fixtures/, byte-identical on rerun
with the same library versions):
    /work/venv-ref/bin/python tools/reference/make_fixtures.py [--out DIR]

Everything is float32 and seeded; each section draws from its own torch.Generator so sections
do not shift when another one changes. Tensor names and conventions: Fixtures/README.txt.
"""

import argparse
import json
import shutil
from pathlib import Path

import safetensors
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

TAU = 2.0
VERSIONS = {"torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__}
# One metadata key only: safetensors writes a multi-key header in hash order, which would make
# regenerated files differ byte-wise.
METADATA = {"generator": "tools/reference/make_fixtures.py " + json.dumps(VERSIONS, sort_keys=True)}


def scalar(x):
    """A 0-d loss as the shape-[1] float32 tensor the fixtures use for scalars."""
    return x.detach().reshape(1).to(torch.float32)


def save(path, tensors):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=METADATA)


def randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale


# ---------------------------------------------------------------- models (a, b)

def make_model(tied, seed):
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", attention_bias=False,
        mlp_bias=False, tie_word_embeddings=tied, attn_implementation="eager")
    torch.manual_seed(seed)  # transformers' own init (normal, std 0.02) draws from the global RNG
    model = LlamaForCausalLM(config).to(torch.float32)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # random RMSNorm gains, so that the tests see them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + randn(gen, *p.shape, scale=0.1))
    return model.eval()


def save_model(model, directory, sharded):
    if directory.exists():
        shutil.rmtree(directory)
    # transformers 5 always writes safetensors (its save_pretrained has no safe_serialization).
    model.save_pretrained(directory, max_shard_size="100KB" if sharded else "50GB")
    # transformers 5 writes rope_theta only inside "rope_parameters"; add the flat 4.x key as well.
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["rope_theta"] = config.get("rope_parameters", {}).get("rope_theta", 10000.0)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation_config = directory / "generation_config.json"
    if generation_config.exists():
        generation_config.unlink()


def model_reference(model, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (2, 17), generator=gen, dtype=torch.int64)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    captured = {}

    def keep(name):
        def hook(_module, _args, output):
            captured[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    hooks = [layer.register_forward_hook(keep(f"hidden.{i}"))
             for i, layer in enumerate(model.model.layers)]
    hooks.append(model.model.norm.register_forward_hook(keep("final")))
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs, use_cache=False).logits
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()

    out = {"input_ids": ids, "logits": logits, "loss": scalar(loss),
           "embedding": captured["final"].mean(dim=1)}
    out.update({k: v for k, v in captured.items() if k.startswith("hidden.")})
    for name, p in model.named_parameters():
        out[f"grad.{name}"] = p.grad
    return out


def check_reload(directory, model, inputs):
    """The saved directory must give the same logits as the model in memory."""
    reloaded = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                attn_implementation="eager").eval()
    with torch.no_grad():
        a = model(input_ids=inputs, use_cache=False).logits
        b = reloaded(input_ids=inputs, use_cache=False).logits
    assert torch.equal(a, b), f"{directory}: reloaded model differs"


# ---------------------------------------------------------------- logit divergences (c)

def kl(log_p, log_q):
    """Per-row KL(p ‖ q) from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def log_mix(weight, log_p, log_q):
    """log(weight·p + (1−weight)·q), computed stably."""
    w = torch.tensor(weight, dtype=torch.float32)
    return torch.logaddexp(torch.log(w) + log_p, torch.log1p(-w) + log_q)


DIVERGENCES = {
    "forward_kl": lambda t, s: kl(t, s),
    "reverse_kl": lambda t, s: kl(s, t),
    "tvd": lambda t, s: 0.5 * (t.exp() - s.exp()).abs().sum(-1),
    "skew_kl_0.1": lambda t, s: kl(t, log_mix(0.1, t, s)),
    "skew_reverse_kl_0.1": lambda t, s: kl(s, log_mix(0.1, s, t)),
}
for _beta in (0.1, 0.5, 0.9):
    DIVERGENCES[f"jsd_{_beta}"] = (lambda b: lambda t, s:
                                   b * kl(t, log_mix(b, t, s)) + (1 - b) * kl(s, log_mix(b, t, s)))(_beta)


def top_k_forward_kl(teacher_logits, log_s, k):
    """Forward KL with the teacher restricted to its k most likely tokens, renormalised."""
    top = (teacher_logits / TAU).topk(k, dim=-1).indices
    log_t = (teacher_logits / TAU).gather(-1, top).log_softmax(-1)  # renormalised over the top k
    return (log_t.exp() * (log_t - log_s.gather(-1, top))).sum(-1)


def divergences(seed):
    gen = torch.Generator().manual_seed(seed)
    teacher = randn(gen, 6, 50, scale=3.0)
    student0 = randn(gen, 6, 50, scale=3.0)
    targets = torch.randint(0, 50, (6,), generator=gen, dtype=torch.int64)
    out = {"teacher_logits": teacher, "student_logits": student0, "targets": targets,
           "temperature": torch.tensor([TAU])}

    def record(name, loss_of_student):
        student = student0.clone().requires_grad_(True)
        loss = loss_of_student(student)
        loss.backward()
        out[f"{name}.loss"] = scalar(loss)
        out[f"{name}.grad"] = student.grad

    log_t = (teacher / TAU).log_softmax(-1)
    for name, divergence in DIVERGENCES.items():
        record(name, lambda s, d=divergence: TAU**2 * d(log_t, (s / TAU).log_softmax(-1)).mean())
    record("forward_kl_top5",
           lambda s: TAU**2 * top_k_forward_kl(teacher, (s / TAU).log_softmax(-1), 5).mean())
    record("ce", lambda s: F.cross_entropy(s, targets))
    return out


# ---------------------------------------------------------------- feature distillation (d)

def features(seed):
    gen = torch.Generator().manual_seed(seed)
    student0, teacher = randn(gen, 10, 12), randn(gen, 10, 20)
    projection0 = randn(gen, 20, 12, scale=0.3)
    out = {"student_hidden": student0, "teacher_hidden": teacher, "projection": projection0}
    per_token = {
        "l1": lambda a, b: (a - b).abs().sum(-1),
        "l2": lambda a, b: (a - b).pow(2).sum(-1),
        "cosine": lambda a, b: 1 - (a * b).sum(-1),
    }
    for name, distance in per_token.items():
        student = student0.clone().requires_grad_(True)
        projection = projection0.clone().requires_grad_(True)
        a = F.normalize(teacher, dim=-1)
        b = F.normalize(student @ projection.T, dim=-1)
        loss = distance(a, b).mean()
        loss.backward()
        out[f"{name}.loss"] = scalar(loss)
        out[f"{name}.grad_student"] = student.grad
        out[f"{name}.grad_projection"] = projection.grad
    return out


# ---------------------------------------------------------------- relational distillation (e)

def pairwise_differences(x):
    """diff[a, b] = x[b] − x[a], with the squared norms; the diagonal is exactly zero."""
    diff = x[None, :, :] - x[:, None, :]
    return diff, diff.pow(2).sum(-1)


def rkd_distance(x):
    """Off-diagonal distances (ordered pairs, row-major), divided by their mean."""
    _, sq = pairwise_differences(x)
    off = ~torch.eye(len(x), dtype=torch.bool)
    d = sq[off].sqrt()  # masked before the sqrt: no 0 under it, so no NaN gradient
    return d / d.mean()


def rkd_angle(x):
    """cos ∠(x_b − x_a, x_c − x_a) for ordered triplets (a, b, c) of distinct indices, row-major."""
    n = len(x)
    diff, sq = pairwise_differences(x)
    eye = torch.eye(n, dtype=torch.bool)
    unit = diff / torch.where(eye, torch.ones_like(sq), sq).sqrt()[..., None]  # diagonal stays 0
    cos = unit @ unit.transpose(1, 2)  # cos[a, b, c] = <e_ab, e_ac>
    a, b, c = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(n), indexing="ij")
    distinct = (a != b) & (a != c) & (b != c)
    return cos[distinct]


def rkd(seed):
    gen = torch.Generator().manual_seed(seed)
    student0, teacher = randn(gen, 5, 12), randn(gen, 5, 20)
    # Make some teacher/student differences exceed 1, so both branches of the Huber loss are
    # tested: teacher point 0 is an outlier (its distances are large, its angles near 0), student
    # point 0 sits near the centroid of the others (its angles are wide).
    teacher[0] += 4.0
    student0[0] = student0[1:].mean(0) + randn(gen, 12, scale=0.1)
    out = {"student": student0, "teacher": teacher}
    for name, psi in (("distance", rkd_distance), ("angle", rkd_angle)):
        student = student0.clone().requires_grad_(True)
        loss = F.smooth_l1_loss(psi(student), psi(teacher), beta=1.0)  # mean over pairs/triplets
        loss.backward()
        assert torch.isfinite(student.grad).all()
        out[f"{name}.loss"] = scalar(loss)
        out[f"{name}.grad"] = student.grad
    return out


# ---------------------------------------------------------------- AdamW (f)

def adamw(seed):
    gen = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(randn(gen, 64))
    out = {"param.initial": param.detach().clone()}
    optimizer = torch.optim.AdamW([param], lr=0.01, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=0.1, foreach=False)
    for step in (1, 2, 3):
        grad = randn(gen, 64)
        out[f"grad.{step}"] = grad
        param.grad = grad.clone()
        optimizer.step()
        out[f"param.step{step}"] = param.detach().clone()
    state = optimizer.state[param]
    out["exp_avg.step3"] = state["exp_avg"]
    out["exp_avg_sq.step3"] = state["exp_avg_sq"]
    return out


def greedy_generation(directory):
    """Greedy decoding with transformers' KV cache on the untied model with its weights (not the norm
    gains) multiplied by 10, so that the logits are far from uniform and every step's choice is clear."""
    model = LlamaForCausalLM.from_pretrained(str(directory), torch_dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(10)
    prompt = torch.tensor([[5, 17, 42, 99, 7]])
    out = model.generate(prompt, max_new_tokens=24, do_sample=False, use_cache=True, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    margins = [float(torch.topk(scores[0], 2).values.diff().abs()) for scores in out.scores]
    assert min(margins) > 1e-3, f"a near-tie in greedy decoding: {min(margins)}"
    return {"prompt": prompt[0].to(torch.int64), "generated": out.sequences[0, prompt.shape[1]:].to(torch.int64),
            "smallest_margin": torch.tensor([min(margins)], dtype=torch.float32)}


# ---------------------------------------------------------------- main

def main():
    default_out = Path(__file__).resolve().parents[2] / "Tests" / "DistillTests" / "Fixtures"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out)
    out_dir = parser.parse_args().out
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    for tied, seed in ((False, 1000), (True, 2000)):
        label = "tied" if tied else "untied"
        model = make_model(tied, seed)
        save_model(model, out_dir / f"llama-{label}", sharded=not tied)
        reference = model_reference(model, seed + 2)
        check_reload(out_dir / f"llama-{label}", model, reference["input_ids"][:, :-1])
        save(out_dir / f"reference-{label}.safetensors", reference)

    save(out_dir / "divergences.safetensors", divergences(3000))
    save(out_dir / "features.safetensors", features(4000))
    save(out_dir / "rkd.safetensors", rkd(5000))
    save(out_dir / "adamw.safetensors", adamw(6000))
    save(out_dir / "generation.safetensors", greedy_generation(out_dir / "llama-untied"))
    print(json.dumps(VERSIONS))


if __name__ == "__main__":
    main()
