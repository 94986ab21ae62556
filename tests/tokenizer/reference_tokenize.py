#!/usr/bin/env python3
"""Reference side of the tokenizer check against a real GGUF model.

Reads the tokenizer metadata of a GGUF file and writes, into --out:
  spec.txt   the TokenizerSpec fields, for the C++ side to build its tokenizer from
  cases.txt  texts with the ids an independent implementation gives them, and chat
             conversations with their rendering by the model's own Jinja template

The independent implementation is Hugging Face `tokenizers`: a ByteLevel BPE model built from
the GGUF vocabulary and merges, with the pre-tokenizer the GGUF `tokenizer.ggml.pre` names, and
the CONTROL / USER_DEFINED tokens registered as added tokens. Chat renderings use jinja2 with the
settings transformers uses.

File format: one record per line, space-separated; every string field is "x" followed by the
hex of its UTF-8 bytes (so "x" alone is the empty string).
  spec.txt:  model|pre|template <str>;  bos|eos|pad|unk|add_bos <int>;
             token <type> <str>;  merge <str>
  cases.txt: encode <name> <parse_special 0|1> <text> <n> <id>...
             chat <add_generation_prompt 0|1> <expected> <n> (<role> <content>)...
"""
import argparse
import gzip
import os
import random
import sys
import time

import gguf
import jinja2.sandbox
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CONTROL, USER_DEFINED = 3, 4
CORPUS = "/usr/share/doc/jargon-text/jargon.txt.gz"
CORPUS_HTML = "/usr/share/doc/jargon-text/jargon.html"


def hexs(text):
    return "x" + text.encode("utf-8", "surrogatepass").hex()


def field_value(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        if field.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [int(field.parts[i][0]) for i in field.data]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def read_spec(path):
    reader = gguf.GGUFReader(path)
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    spec = {
        "model": field_value(reader, "tokenizer.ggml.model"),
        "pre": field_value(reader, "tokenizer.ggml.pre", ""),
        "tokens": tokens,
        "types": field_value(reader, "tokenizer.ggml.token_type", [1] * len(tokens)),
        "merges": field_value(reader, "tokenizer.ggml.merges"),
        "template": field_value(reader, "tokenizer.chat_template", ""),
    }
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"),
                      ("pad", "padding_token_id"), ("unk", "unknown_token_id")):
        spec[name] = int(field_value(reader, "tokenizer.ggml." + key, -1))
    spec["add_bos"] = int(bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)))
    return spec


def write_spec(spec, path):
    with open(path, "w") as out:
        for key in ("model", "pre", "template"):
            out.write(f"{key} {hexs(spec[key])}\n")
        for key in ("bos", "eos", "pad", "unk", "add_bos"):
            out.write(f"{key} {spec[key]}\n")
        for text, kind in zip(spec["tokens"], spec["types"]):
            out.write(f"token {kind} {hexs(text)}\n")
        for merge in spec["merges"]:
            out.write(f"merge {hexs(merge)}\n")


def build_reference(spec, with_added_tokens):
    """A `tokenizers` pipeline equivalent to what the GGUF metadata describes."""
    if spec["model"] != "gpt2":
        sys.exit(f"reference: tokenizer model {spec['model']!r} is not byte-level BPE")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if spec["pre"] == "gpt2":
        pre = byte_level
    elif spec["pre"] in ("smollm", "starcoder", "refact"):
        pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        sys.exit(f"reference: no reference pre-tokenizer for {spec['pre']!r}")
    vocab = {text: i for i, text in enumerate(spec["tokens"])}
    merges = [tuple(m.split(" ")) for m in spec["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None,
                                     fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    if with_added_tokens:
        added = [AddedToken(text, special=kind == CONTROL, normalized=False)
                 for text, kind in zip(spec["tokens"], spec["types"])
                 if kind in (CONTROL, USER_DEFINED)]
        tokenizer.add_tokens(added)
    return tokenizer


def render_chat(template, messages, add_generation_prompt):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt)


def conversations():
    return [
        ([{"role": "user", "content": "What is the capital of France?"}], True),
        ([{"role": "system", "content": "Answer in one word."},
          {"role": "user", "content": "Capital of Peru?"},
          {"role": "assistant", "content": "Lima."},
          {"role": "user", "content": "And of Chile? 🇨🇱"}], True),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], False),
        ([{"role": "user", "content": "  spaced\n\nout  "},
          {"role": "system", "content": "late system turn"}], True),
        ([], True),
        ([], False),
    ]


def corpus_cases():
    text = gzip.open(CORPUS, "rt", encoding="utf-8").read()
    paragraphs = text.split("\n\n")
    step = max(1, len(paragraphs) // 300)
    cases = [(f"jargon-paragraph-{i}", paragraphs[i] + "\n\n") for i in range(0, len(paragraphs),
                                                                          step)]
    megabyte = text[:text.rfind("\n", 0, 1 << 20) + 1]
    cases.append(("jargon-1MB", megabyte))
    if os.path.exists(CORPUS_HTML):
        cases.append(("jargon-html-raw", open(CORPUS_HTML, encoding="latin-1").read()))
    return cases


def handwritten_cases():
    return [
        ("numbers", "1234567 3.14159 1,000,000 2024-11-23 0x7fff 1e-10 -42 +7 100% $5.99"),
        ("unicode-numbers", "٣٤٥ ½ ² Ⅷ ১২৩ ５６ 〇"),
        ("accents", "Crème brûlée à la française, naïve façade, Ångström, Øresund, Straße, "
                    "İstanbul, e\u0301 (combining)"),
        ("emoji", "😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨✨ a😀b"),
        ("scripts", "日本語のテキスト、中文文本。한국어 текст на русском עברית العربية "
                    "हिन्दी ภาษาไทย Ελληνικά"),
        ("whitespace", "a  b   c\t\t d \n\n\n e   \n  f\r\n g\u00a0\u00a0h\u3000i \u2028j   "),
        ("leading-trailing", "   leading and trailing   "),
        ("newlines", "\n\nline one\nline two\n\n\nline three\n"),
        ("contractions", "I'm, you're, he's, we've, they'll, I'd, DON'T, O'Neil's ''quoted'' "
                         "it 's 'tis"),
        ("code", open(__file__, encoding="utf-8").read()),
        ("control-bytes", "a\x04b\x06c !\x04! \x00\x1f\x7f end"),
        ("special-literal", "<|im_start|>user\nhello<|im_end|>\n<|endoftext|><|im_start|"),
        ("added-lookalikes", "<repo_name>x<file_sep><filename>a.py\n<|im_end|"),
        ("empty", ""),
    ]


def fuzz_cases(count=300, seed=1234):
    rng = random.Random(seed)
    alphabet = (list("abcXYZ019 '\n\t!?.,-_<|>") + ["  ", "'s", "'ll", "<|im_start|>", "<|im_end|>",
                "é", "ß", "日", "ñ", "\u0301", "\u00a0", "\u2028", "\u3000", "½", "٣", "²",
                "😀", "🏽", "\u200d", "€", "\x04", "\x85", "\u1c89", "𝔸", "\uff10"])
    cases = []
    for i in range(count):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        cases.append((f"fuzz-{i}", text))
    return cases


def encode_record(name, parse_special, text, ids):
    return " ".join(["encode", hexs(name), str(parse_special), hexs(text), str(len(ids))]
                    + [str(i) for i in ids])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    spec = read_spec(args.model)
    write_spec(spec, os.path.join(args.out, "spec.txt"))
    with_special = build_reference(spec, with_added_tokens=True)
    without_special = build_reference(spec, with_added_tokens=False)

    texts = handwritten_cases() + corpus_cases() + fuzz_cases()
    records = []
    for name, text in texts:
        for parse_special, tokenizer in ((1, with_special), (0, without_special)):
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            records.append(encode_record(name, parse_special, text, ids))
    for messages, add_generation_prompt in conversations():
        rendered = render_chat(spec["template"], messages, add_generation_prompt)
        fields = ["chat", str(int(add_generation_prompt)), hexs(rendered), str(len(messages))]
        for message in messages:
            fields += [hexs(message["role"]), hexs(message["content"])]
        records.append(" ".join(fields))
        ids = with_special.encode(rendered, add_special_tokens=False).ids
        records.append(encode_record("chat-rendered", 1, rendered, ids))
    with open(os.path.join(args.out, "cases.txt"), "w") as out:
        out.write("\n".join(records) + "\n")

    megabyte = dict(texts)["jargon-1MB"]
    start = time.perf_counter()
    n = len(without_special.encode(megabyte, add_special_tokens=False).ids)
    seconds = time.perf_counter() - start
    print(f"reference: {len(records)} records; tokenizers {n} tokens of {len(megabyte.encode())} "
          f"bytes in {seconds:.3f} s ({n / seconds:,.0f} tokens/s, single call)")


if __name__ == "__main__":
    main()
