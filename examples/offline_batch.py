"""Offline batch generation with SSD (speculative-speculative decoding).

    python examples/offline_batch.py TARGET_DIR DRAFT_DIR
"""
import sys

from vllm import LLM, SamplingParams

from vllm_ssd import get_ssd_metrics


def main(target: str, draft: str) -> None:
    llm = LLM(model=target, max_model_len=2048, max_num_seqs=8,
              speculative_config={"method": "ssd", "model": draft, "num_speculative_tokens": 4})
    prompts = ["def quicksort(items):", "Explain what a hash map is in two sentences.",
               "Write a SQL query that counts orders per customer."]
    params = SamplingParams(temperature=0.0, max_tokens=96)
    for output in llm.generate(prompts, params):
        print(repr(output.prompt), "->", repr(output.outputs[0].text[:200]))
    stats = get_ssd_metrics(llm)
    print(f"cache hit rate {stats['hit_rate']:.1%}, "
          f"accepted {stats['accepted_tokens']:.0f} of {stats['drafted_tokens']:.0f} drafts")


if __name__ == "__main__":
    main(*sys.argv[1:3])
