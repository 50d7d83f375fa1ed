"""Print the SentencePiece ids of a text file, encoded the way distill encodes text.

The rule: split the text into lines, each keeping its trailing "\\n" (only "\\n" splits; a "\\r"
stays inside its line; a last line without "\\n" is kept as it is), encode each line with
sp.encode(line) (no BOS/EOS), and concatenate the ids.

    /work/venv-ref/bin/pip install sentencepiece
    python tools/reference/spm_ids.py --model tokenizer.model --text FILE    # ids, space-separated
"""

import argparse

import sentencepiece as spm


def read_text(path):
    """The file's text (strict UTF-8, no newline translation) and its size in bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw.decode("utf-8"), len(raw)


def split_lines(text):
    """Lines that keep their "\\n"; "a\\nb" -> ["a\\n", "b"], "a\\n" -> ["a\\n"]."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return [line for line in lines if line]


def encode_text(processor, text):
    ids = []
    for line in split_lines(text):
        ids.extend(processor.encode(line))
    return ids


def main():
    parser = argparse.ArgumentParser(description="SentencePiece ids of a text, line by line")
    parser.add_argument("--model", required=True, help="SentencePiece .model file")
    parser.add_argument("--text", required=True, help="UTF-8 text file")
    args = parser.parse_args()
    processor = spm.SentencePieceProcessor(model_file=args.model)
    text, _ = read_text(args.text)
    print(" ".join(str(i) for i in encode_text(processor, text)))


if __name__ == "__main__":
    main()
