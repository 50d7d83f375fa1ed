"""The PyTorch side of `tools/bench/compare`: the workloads of `distill bench` on the same shapes.

  train      one AdamW step of the teacher on CE (forward, backward, update)
  distill    teacher forward without gradients + student forward/backward on CE + tau^2 * forward KL
  inference  teacher forward without gradients (what a live teacher, eval and a teacher cache run)
  generate   greedy decoding at batch 1 with the KV cache, 8-token prompt, 120 new tokens

Models are transformers' LlamaForCausalLM with the shapes of distill's presets (tied embeddings, SDPA
attention). Prints one JSON object of median tokens/s (and peak resident MB).
Usage: torch_reference.py --preset small --threads 2 --repeats 5 [--compile]
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

# name: vocab, context, batch, teacher (width, layers, heads, ffn), student (width, layers, heads, ffn)
PRESETS = {
    "small": (4096, 256, 8, (256, 6, 8, 688), (128, 4, 4, 344)),
    "tiny": (2048, 128, 8, (128, 4, 4, 344), (64, 2, 2, 172)),
}


def build(vocab, context, width, layers, heads, ffn):
    config = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=context,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def median_seconds(step, repeats, warmup=3):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile (inductor) the models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab, context, batch, teacher_shape, student_shape = PRESETS[args.preset]
    teacher, student = build(vocab, context, *teacher_shape), build(vocab, context, *student_shape)
    inputs = torch.randint(0, vocab, (batch, context))
    targets = torch.randint(0, vocab, (batch, context))
    tokens = batch * context
    teacher_optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
    student_optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    run_teacher = torch.compile(teacher) if args.compile else teacher
    run_student = torch.compile(student) if args.compile else student

    def train():
        logits = run_teacher(inputs).logits
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        teacher_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        teacher_optimizer.step()

    tau = 2.0

    def distill():
        with torch.no_grad():
            teacher_logits = run_teacher(inputs).logits
        logits = run_student(inputs).logits
        ce = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        kl = F.kl_div(F.log_softmax(logits / tau, -1).view(-1, vocab), F.log_softmax(teacher_logits / tau, -1).view(-1, vocab),
                      log_target=True, reduction="batchmean")
        loss = ce + tau * tau * kl
        student_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        student_optimizer.step()

    def inference():
        with torch.no_grad():
            run_teacher(inputs)

    result = {"preset": args.preset, "threads": args.threads, "compiled": args.compile, "torch": torch.__version__}
    result["train_tokens_per_second"] = tokens / median_seconds(train, args.repeats)
    result["distill_tokens_per_second"] = tokens / median_seconds(distill, args.repeats)
    result["inference_tokens_per_second"] = tokens / median_seconds(inference, args.repeats)
    if not args.compile:
        prompt = (torch.arange(8) * 37 % vocab).unsqueeze(0)
        teacher.eval()

        def generate():
            with torch.no_grad():
                teacher.generate(prompt, max_new_tokens=120, min_new_tokens=120, do_sample=False, pad_token_id=0)

        result["generation_tokens_per_second"] = 120 / median_seconds(generate, args.repeats, warmup=1)
    result["peak_resident_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
