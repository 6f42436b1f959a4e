"""Markdown table and plots of benchmark rows (written next to the JSON)."""
from __future__ import annotations

import math
from pathlib import Path

COLUMNS = [
    ("method", "method", "{}"), ("plan", "SSD plan", "{}"), ("cpu_isa", "CPU", "{}"),
    ("placement", "cores", "{}"), ("batch_size", "bs", "{}"),
    ("temperature", "T", "{:g}"), ("decode_tok_s", "decode tok/s", "{:.2f}"),
    ("tpot_p50_ms", "TPOT p50 ms", "{:.0f}"), ("tpot_p99_ms", "TPOT p99 ms", "{:.0f}"),
    ("ttft_p50_ms", "TTFT p50 ms", "{:.0f}"), ("mean_accepted_length", "acc. len", "{:.2f}"),
    ("per_position_acceptance", "per-position acc.", "{}"), ("hit_rate", "hit rate", "{:.0%}"),
    ("no_speculation_share", "steps without spec.", "{:.0%}"),
    ("rows_without_kv", "rows without draft KV", "{:.0f}"),
    ("t_p_over_t_v", "T_p/T_v", "{:.2f}"), ("backup_neural_rows", "backup neural", "{:.0f}"),
    ("backup_ngram_rows", "backup ngram", "{:.0f}"),
    ("speedup_vs_plain_2core", "vs plain 2c", "{:.2f}x"),
    ("speedup_vs_plain_1core", "vs plain 1c", "{:.2f}x"),
    ("speedup_vs_vllm_sd_2core", "vs vLLM SD 2c", "{:.2f}x"),
    ("speedup_vs_vllm_sd_1core", "vs vLLM SD 1c", "{:.2f}x"),
    ("model_decode_tok_s", "speed model tok/s", "{:.2f}"),
]
NAMES = {"plain": "plain", "vllm_sd": "vLLM draft_model SD", "vllm_sd_fixed": "vLLM SD (fixed)",
         "ssd_sd": "vllm_ssd mode sd", "ssd_ssd": "vllm_ssd mode ssd",
         "ssd": "vllm_ssd default"}


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    if isinstance(value, list):
        return "/".join(f"{v:.2f}" for v in value)
    return fmt.format(value)


def _steps_off(values: dict) -> str:
    share = values.get("no_speculation_share", 0.0)
    return f" ({share:.0%} of steps off)" if share >= 0.005 else ""


def plan_cell(row: dict) -> str:
    """The plan an SSD engine ran (``ssd``, ``sd`` or ``stood aside``) and the share of its
    steps without speculation; "–" for other methods."""
    return row["plan"] + _steps_off(row) if "plan" in row else "–"


def dataset_cell(values: dict) -> str:
    """One dataset's cell: accepted length / SSD hit rate where measured ("–" where no
    draft was verified: no rate is shown as 0), then how SSD's plan strayed, if it did."""
    text = "–"
    if "mean_accepted_length" in values:
        text = f"{values['mean_accepted_length']:.2f}"
        if "hit_rate" in values:
            text += f" / {values['hit_rate']:.0%}"
    return text + (" (stood aside)" if values.get("plan") == "stood aside" else _steps_off(values))


def per_dataset_lines(rows: list[dict]) -> list[str]:
    """The per-dataset table (batch size 1, greedy), [] where no such row ran."""
    datasets = [r for r in rows if r.get("per_dataset") and r["temperature"] == 0
                and r["method"] != "plain"]  # plain decoding drafts nothing
    if not datasets:
        return []
    names = sorted({name for r in datasets for name in r["per_dataset"]})
    lines = ["Per dataset (batch size 1, greedy): mean accepted length / SSD hit rate", "",
             "| method | cores | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for r in datasets:
        cells = [dataset_cell(r["per_dataset"].get(name, {})) for name in names]
        lines.append(f"| {r['method']} | {r['placement']} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    order = sorted(rows, key=lambda r: (r.get("cpu_isa") or "", r["temperature"], r["batch_size"],
                                        r["method"], r["placement"]))
    lines += ["| " + " | ".join(_cell(r, key, fmt) for key, _, fmt in COLUMNS) + " |" for r in order]
    per = per_dataset_lines(rows)
    return "\n".join(lines + ([""] + per if per else [])) + "\n"


def side_by_side(rows: list[dict]) -> str:
    """One line per method and placement (the demo's table): the plan SSD ran, decode
    tok/s, its ratio to plain decoding on the same cores, mean accepted length and SSD
    cache hit rate; then the per-dataset table."""
    plain = {(r["batch_size"], r["temperature"]): r["decode_tok_s"] for r in rows
             if r["method"] == "plain" and r["placement"] == "2 cores"}
    lines = ["| method | SSD plan | cores | bs | T | decode tok/s | vs plain (2 cores) | "
             "accepted length | hit rate |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["temperature"], r["batch_size"],
                                         list(NAMES).index(r["method"]))):
        base = plain.get((r["batch_size"], r["temperature"]))
        cells = [NAMES[r["method"]], plan_cell(r), r["placement"], str(r["batch_size"]),
                 f"{r['temperature']:g}", f"{r['decode_tok_s']:.2f}",
                 f"{r['decode_tok_s'] / base:.2f}x" if base else "–",
                 _cell(r, "mean_accepted_length", "{:.2f}"), _cell(r, "hit_rate", "{:.0%}")]
        lines.append("| " + " | ".join(cells) + " |")
    per = per_dataset_lines(rows)
    return "\n".join(lines + ([""] + per if per else [])) + "\n"


def speedup_panels(rows: list[dict]) -> list[float]:
    """The speedup plot's panels: one per temperature that ran."""
    return sorted({r["temperature"] for r in rows})


def dataset_panels(per: list[dict]) -> list[tuple[str, str]]:
    """The per-dataset plot's panels (key, title): accepted length, and the SSD hit rate
    only where some row measured one."""
    panels = [("mean_accepted_length", "mean accepted length (bs 1, greedy)")]
    if any("hit_rate" in v for r in per for v in r["per_dataset"].values()):
        panels.append(("hit_rate", "SSD cache hit rate"))
    return panels


def _speedup_plot(plt, rows: list[dict], path: Path) -> None:
    temperatures = speedup_panels(rows)
    fig, axes = plt.subplots(1, len(temperatures), figsize=(5.5 * len(temperatures), 4),
                             squeeze=False)
    configs = sorted({(r["method"], r["placement"]) for r in rows})
    colors = {config: f"C{i % 10}" for i, config in enumerate(configs)}  # same in every panel
    batch_sizes = sorted({r["batch_size"] for r in rows})
    for ax, temperature in zip(axes[0], temperatures):
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
        ax.set_xticks(batch_sizes, labels=batch_sizes)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _dataset_plot(plt, per: list[dict], path: Path) -> None:
    panels = dataset_panels(per)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    names = sorted({name for r in per for name in r["per_dataset"]})
    width = 0.8 / len(per)
    for i, r in enumerate(per):
        xs = [j + i * width for j in range(len(names))]
        for ax, (key, _) in zip(axes[0], panels):  # nothing measured: no bar (not a 0)
            ax.bar(xs, [r["per_dataset"].get(n, {}).get(key, math.nan) for n in names], width,
                   label=f"{r['method']} ({r['placement']})")
    for ax, (_, title) in zip(axes[0], panels):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], labels=names)
        ax.set_title(title)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plots(rows: list[dict], out_dir: Path, tag: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _speedup_plot(plt, rows, out_dir / f"speedup_vs_batch{tag}.png")
    per = [r for r in rows if r.get("per_dataset") and r["temperature"] == 0
           and r["method"] != "plain"]  # plain decoding drafts nothing
    if per:
        _dataset_plot(plt, per, out_dir / f"acceptance_by_dataset{tag}.png")
    plt.close("all")


def write_report(rows: list[dict], out_dir: Path, tag: str = "") -> None:
    (out_dir / f"offline{tag}.md").write_text(markdown(rows))
    plots(rows, out_dir, tag)
