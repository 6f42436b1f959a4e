"""Markdown table and plots of benchmark rows (written next to the JSON)."""
from __future__ import annotations

from pathlib import Path

COLUMNS = [
    ("method", "method", "{}"), ("cpu_isa", "CPU", "{}"), ("placement", "cores", "{}"),
    ("batch_size", "bs", "{}"),
    ("temperature", "T", "{:g}"), ("decode_tok_s", "decode tok/s", "{:.2f}"),
    ("tpot_p50_ms", "TPOT p50 ms", "{:.0f}"), ("tpot_p99_ms", "TPOT p99 ms", "{:.0f}"),
    ("ttft_p50_ms", "TTFT p50 ms", "{:.0f}"), ("mean_accepted_length", "acc. len", "{:.2f}"),
    ("per_position_acceptance", "per-position acc.", "{}"), ("hit_rate", "hit rate", "{:.0%}"),
    ("t_p_over_t_v", "T_p/T_v", "{:.2f}"), ("backup_neural_rows", "backup neural", "{:.0f}"),
    ("backup_ngram_rows", "backup ngram", "{:.0f}"),
    ("speedup_vs_plain_2core", "vs plain 2c", "{:.2f}x"),
    ("speedup_vs_plain_1core", "vs plain 1c", "{:.2f}x"),
    ("speedup_vs_vllm_sd_2core", "vs vLLM SD 2c", "{:.2f}x"),
    ("speedup_vs_vllm_sd_1core", "vs vLLM SD 1c", "{:.2f}x"),
    ("model_decode_tok_s", "speed model tok/s", "{:.2f}"),
]


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    if isinstance(value, list):
        return "/".join(f"{v:.2f}" for v in value)
    return fmt.format(value)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    order = sorted(rows, key=lambda r: (r.get("cpu_isa") or "", r["temperature"], r["batch_size"],
                                        r["method"], r["placement"]))
    lines += ["| " + " | ".join(_cell(r, key, fmt) for key, _, fmt in COLUMNS) + " |" for r in order]
    datasets = [r for r in rows if r.get("per_dataset") and r["temperature"] == 0
                and r["method"] != "plain"]  # plain decoding drafts nothing
    if datasets:
        lines += ["", "Per dataset (batch size 1, greedy): mean accepted length / SSD hit rate", "",
                  "| method | cores | " + " | ".join(sorted(datasets[0]["per_dataset"])) + " |",
                  "|---|---|" + "---|" * len(datasets[0]["per_dataset"])]
        for r in datasets:
            cells = [f"{v.get('mean_accepted_length', 0):.2f}"
                     + (f" / {v['hit_rate']:.0%}" if "hit_rate" in v else "")
                     for _, v in sorted(r["per_dataset"].items())]
            lines.append(f"| {r['method']} | {r['placement']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def side_by_side(rows: list[dict]) -> str:
    """One line per method and placement (the demo's table): decode tok/s, its ratio to
    plain decoding on the same cores, mean accepted length and SSD cache hit rate."""
    plain = {(r["batch_size"], r["temperature"]): r["decode_tok_s"] for r in rows
             if r["method"] == "plain" and r["placement"] == "2 cores"}
    names = {"plain": "plain", "vllm_sd": "vLLM draft_model SD", "vllm_sd_fixed": "vLLM SD (fixed)",
             "ssd_sd": "vllm_ssd sd", "ssd": "vllm_ssd SSD"}
    lines = ["| method | cores | bs | T | decode tok/s | vs plain (2 cores) | accepted length | hit rate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["temperature"], r["batch_size"],
                                         list(names).index(r["method"]))):
        base = plain.get((r["batch_size"], r["temperature"]))
        cells = [names[r["method"]], r["placement"], str(r["batch_size"]), f"{r['temperature']:g}",
                 f"{r['decode_tok_s']:.2f}", f"{r['decode_tok_s'] / base:.2f}x" if base else "–",
                 _cell(r, "mean_accepted_length", "{:.2f}"), _cell(r, "hit_rate", "{:.0%}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], out_dir: Path, tag: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    configs = sorted({(r["method"], r["placement"]) for r in rows})
    colors = {config: f"C{i % 10}" for i, config in enumerate(configs)}  # same in both panels
    for ax, temperature in zip(axes, sorted({r["temperature"] for r in rows})):
        for method, placement in configs:
            series = sorted((r["batch_size"], r.get("speedup_vs_plain_2core", 0)) for r in rows
                            if (r["method"], r["placement"], r["temperature"]) == (method, placement, temperature))
            if series:
                ax.plot(*zip(*series), marker="o", color=colors[method, placement],
                        label=f"{method} ({placement})")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set(xscale="log", xlabel="batch size", ylabel="decode speedup vs plain (2 cores)",
               title=f"T = {temperature:g}")
        ax.minorticks_off()
        ax.set_xticks(sorted({r["batch_size"] for r in rows}), labels=sorted({r["batch_size"] for r in rows}))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"speedup_vs_batch{tag}.png", dpi=120)
    per = [r for r in rows if r.get("per_dataset") and r["temperature"] == 0]
    if per:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        names = sorted(per[0]["per_dataset"])
        width = 0.8 / len(per)
        for i, r in enumerate(per):
            xs = [j + i * width for j in range(len(names))]
            axes[0].bar(xs, [r["per_dataset"][n].get("mean_accepted_length", 0) for n in names],
                        width, label=f"{r['method']} ({r['placement']})")
            axes[1].bar(xs, [r["per_dataset"][n].get("hit_rate", 0) for n in names], width)
        for ax, title in zip(axes, ("mean accepted length (bs 1, greedy)", "SSD cache hit rate")):
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], labels=names)
            ax.set_title(title)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"acceptance_by_dataset{tag}.png", dpi=120)
    plt.close("all")


def write_report(rows: list[dict], out_dir: Path, tag: str = "") -> None:
    (out_dir / f"offline{tag}.md").write_text(markdown(rows))
    plots(rows, out_dir, tag)
