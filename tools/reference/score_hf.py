"""Score a text with an exported Hugging Face Llama directory (the opt-in cross-check).

    /work/venv-ref/bin/pip install torch transformers sentencepiece safetensors
    python tools/reference/score_hf.py --model DIR --text FILE [--stride N] [--context N]

DIR holds config.json, the safetensors weights and tokenizer.model. The text is tokenized like
distill does (spm_ids.py: line by line, each line keeping its "\\n", no BOS/EOS).
Window k starts at s = k * stride (--stride, default: the context): the model reads the
--context tokens ids[s : s+context] (default: max_position_embeddings) and predicts
ids[s+1 : s+context+1]. Every token from the second on is scored exactly once: the first window
scores all its targets, each later window only the targets no earlier window scored, with the
tokens before them in its window as context. With stride == context the windows just tile the
text, each target predicted from the 1..context tokens before it in its window. Prints one JSON line:
    {"tokens": n, "scored": n-1, "nll_sum", "mean_nll" (= nll_sum/scored), "perplexity",
     "bytes" (UTF-8 bytes of the file), "bits_per_byte" (= nll_sum / (ln 2 * bytes))}
"""

import argparse
import json
import math
import sys
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spm_ids import encode_text, read_text  # noqa: E402


def windows(n, context, stride):
    """(start, end, first_target): the model reads ids[start:end-1] and the targets
    first_target..end-1 are scored (global positions; start < first_target, end-1-start <= context)."""
    start, scored_until = 0, 0  # targets 1..scored_until are already scored
    while scored_until < n - 1:
        end = min(start + context + 1, n)
        yield start, end, scored_until + 1
        scored_until = end - 1
        start += stride


@torch.no_grad()
def nll_sum(model, ids, context, stride):
    total = 0.0
    for start, end, first_target in windows(len(ids), context, stride):
        inputs = torch.tensor(ids[start:end - 1], dtype=torch.int64)[None]
        log_probs = model(input_ids=inputs, use_cache=False).logits[0].float().log_softmax(-1)
        targets = torch.arange(first_target, end)  # global positions of the scored tokens
        picked = log_probs[targets - start - 1, torch.tensor(ids[first_target:end])]
        total -= picked.double().sum().item()
    return total


def main():
    parser = argparse.ArgumentParser(description="Perplexity of a text under an HF Llama")
    parser.add_argument("--model", required=True, type=Path, help="exported HF directory")
    parser.add_argument("--text", required=True, help="UTF-8 text file")
    parser.add_argument("--tokenizer", type=Path, help="default: MODEL/tokenizer.model")
    parser.add_argument("--context", type=int, help="default: max_position_embeddings")
    parser.add_argument("--stride", type=int, help="default: the context")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = spm.SentencePieceProcessor(
        model_file=str(args.tokenizer or args.model / "tokenizer.model"))
    text, n_bytes = read_text(args.text)
    ids = encode_text(processor, text)
    context = args.context or model.config.max_position_embeddings
    stride = args.stride or context
    if not 1 <= stride <= context:
        parser.error(f"need 1 <= stride <= context, got stride {stride}, context {context}")
    if len(ids) < 2:
        parser.error(f"the text has {len(ids)} tokens; at least 2 are needed")

    total = nll_sum(model, ids, context, stride)
    scored = len(ids) - 1
    print(json.dumps({
        "tokens": len(ids), "scored": scored, "nll_sum": total, "mean_nll": total / scored,
        "perplexity": math.exp(total / scored), "bytes": n_bytes,
        "bits_per_byte": total / (math.log(2) * n_bytes) if n_bytes else None,
    }))


if __name__ == "__main__":
    main()
