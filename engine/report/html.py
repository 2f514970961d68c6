"""``fld report``: one self-contained HTML file of a run (no external files, scripts or fonts). It
opens with what a person inspecting refinement wants first: the headline metric of each family per
round with its interval and its change (marked when within the noise), the gates, and the images
that changed most between the last two rounds drawn in both; then plots, every metric, the
FLD-5B statistics, what the filters dropped and why, and samples with boxes, masks and phrases."""

from __future__ import annotations

import base64
import html
import io
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from engine.dataset.metrics import Cell, MetricRow, headline, metric_rows, values_table
from engine.dataset.query import QueryResult, connect
from engine.dataset.rounds import rounds_table
from engine.dataset.sources import load_rgb
from engine.dataset.stats import dataset_stats
from engine.dataset.store import Store, StoreError
from engine.loop.summary import image_changes
from engine.report.plots import plot_metrics
from schemas.masks import decode_rle

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]
CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}h1{font-size:22px}h2{font-size:18px;
border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.plots img{margin:4px;border:1px solid #eee}.sample{display:inline-block;vertical-align:top;margin:8px;width:340px;font-size:12px}
.sample img{width:340px;border:1px solid #ccc}.ci{color:#666;font-size:11px}.noise{color:#999}
.change{border-top:1px solid #eee;margin:6px 0}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}"""


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(result: QueryResult, title: str = "") -> str:
    if not result.rows:
        return f"<p><em>{html.escape(title)}: none</em></p>"
    head = "".join(f"<th class=l>{html.escape(str(c))}</th>" for c in result.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in result.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>"
    if value is None:
        return "<td>-</td>"
    return f"<td class=l>{html.escape(str(value))}</td>"


def draw_sample(store: Store, round_id: int, image_id: str, uri: str) -> tuple[str, list[tuple[str, tuple]]]:
    """The image with the round's object masks and boxes, and its grounded phrases' boxes (dashed)."""
    image = Image.fromarray(load_rgb(uri)).convert("RGBA")
    regions = store.read("regions", round_id)
    regions = regions.filter(pc.equal(regions.column("image_id"), image_id)).to_pylist()
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    legend = []
    for k, r in enumerate(x for x in regions if x["kind"] in ("object", "ocr")):
        colour = PALETTE[k % len(PALETTE)]
        if r["mask"] is not None:
            mask = decode_rle(r["mask"])
            tint = np.zeros((*mask.shape, 4), np.uint8)
            tint[mask] = (*colour, 90)
            overlay = Image.alpha_composite(overlay, Image.fromarray(tint, "RGBA"))
            draw = ImageDraw.Draw(overlay)
        draw.rectangle(r["box"], outline=(*colour, 255), width=2)
        label = f"{r['label'] or r['kind']}" + (f" {r['score']:.2f}" if r["score"] is not None else "")
        draw.text((r["box"][0] + 2, r["box"][1] + 1), label, fill=(*colour, 255))
    triplets = store.read("triplets", round_id)
    triplets = triplets.filter(pc.equal(triplets.column("image_id"), image_id)).to_pylist()
    for k, t in enumerate(triplets[:8]):
        colour = PALETTE[(k + 5) % len(PALETTE)]
        x1, y1, x2, y2 = t["box"]
        for i in range(int(x1), int(x2), 6):
            draw.line([(i, y1), (min(i + 3, x2), y1)], fill=(*colour, 255))
            draw.line([(i, y2), (min(i + 3, x2), y2)], fill=(*colour, 255))
        legend.append((t["phrase"], colour))
    return _png(Image.alpha_composite(image, overlay).convert("RGB")), legend


def _cell_text(cell: Cell | None) -> str:
    if cell is None or cell.value is None:
        return "<td>-</td>"
    text = f"{cell.value:.3f}"
    if cell.low is not None and cell.high is not None:
        text += f" <span class=ci>[{cell.low:.3f}, {cell.high:.3f}]</span>"
    elif cell.too_few:
        text += f" <span class=ci>(no interval: {cell.images} images)</span>"
    if cell.change is not None:
        noise = {True: " <span class=noise>within noise</span>", False: " <b>beyond noise</b>"}.get(cell.within_noise, "")
        text += f"<br><span class=ci>{cell.change:+.3f}</span>{noise}"
    return f"<td>{text}</td>"


def _headline(rows: list[MetricRow]) -> str:
    head = headline(rows)
    if not head.rows:
        return "<p><em>no gold metrics yet</em></p>"
    cols = "".join(f"<th>{html.escape(c)}</th>" for c in head.columns)
    body = "".join(f"<tr><td class=l>{html.escape(m)}</td>" + "".join(_cell_text(cells.get(c)) for c in head.columns)
                   + "</tr>" for m, cells in head.rows)
    return (f"<table><tr><th class=l>metric</th>{cols}</tr>{body}</table><p class=ci>value [95% interval, bootstrap "
            "over gold images]; below: change from the round before, <em>within noise</em> when its paired interval "
            "holds 0. Round 0: the bootstrapped models alone, on the target domain's gold and on the seed domain's "
            "(seed-gold) where they were trained.</p>")


def _gates(found: list[MetricRow]) -> str:
    """One row per round and task: the gold values the gate compared and whether it let the task in."""
    rows = [r for r in found if r.family == "gates"]
    value = {(k, r.metric): c.value for r in rows for k, c in r.cells.items()}
    tasks = sorted({(k, r.metric) for r in rows for k in r.cells if "." not in r.metric.rsplit(">", 1)[-1]},
                   key=lambda kt: (-kt[0], kt[1]))
    result = QueryResult(["round", "task", "candidate", "incumbent", "trivial answer", "entered"],
                         [(k, task, value.get((k, f"{task}.candidate")), value.get((k, f"{task}.incumbent")),
                           value.get((k, f"{task}.trivial")), "yes" if value.get((k, task)) else "no")
                          for k, task in tasks])
    return _table(result, "gates")


def _changed_samples(store: Store, rounds: list[int], uris: dict[str, str], samples: int) -> str:
    """The images that changed most from the round before to the last round, drawn in both."""
    if len(rounds) < 2:
        return "<p><em>one round only: nothing changed yet</em></p>"
    before, last = rounds[-2], rounds[-1]
    found = sorted((c for c in image_changes(store, last) if c.total and c.image_id in uris),
                   key=lambda c: (-c.total, c.image_id))[:samples]
    if not found:
        return f"<p><em>round {last} changed nothing from round {before}</em></p>"
    parts = []
    for change in found:
        cells = []
        for r in (before, last):
            src, _ = draw_sample(store, r, change.image_id, uris[change.image_id])
            cells.append(f"<div class=sample><img alt='round {r} {html.escape(change.image_id[:8])}' src='{src}'>"
                         f"<div>round {r}</div></div>")
        note = (f"{html.escape(change.image_id[:12])}: {change.added} object(s) added, {change.removed} removed, "
                f"{change.reworded} description(s) reworded, {change.new_texts} new")
        parts.append(f"<div class=change><div>{note}</div>{''.join(cells)}</div>")
    return "".join(parts)


def _round_diffs(store: Store, rounds: list[int]) -> str:
    """Each round against the one before: annotations added, removed, changed and moved per family
    (``fld diff``), the round's kind and the people's reviews it holds."""
    from engine.dataset.diff import diff_rounds

    kinds = {r["round"]: r["kind"] for r in store.read("rounds").to_pylist()}
    reviews = store.read("reviews", columns=["round", "image_id"]).to_pylist()
    rows = []
    for before, after in zip(rounds, rounds[1:]):
        found = diff_rounds(store, before, after)
        reviewed = len({r["image_id"] for r in reviews if r["round"] == after})
        for family, counts in sorted(found.by_family().items()):
            rows.append((after, kinds.get(after, "?"), reviewed or "", family, counts["added"], counts["removed"],
                         counts["changed"], counts["moved"], f"fld diff --from {before} --to {after}"))
    if not rows:
        return "<p><em>one round only: nothing to compare yet</em></p>"
    return _table(QueryResult(["round", "kind", "images reviewed", "family", "added", "removed", "changed", "moved",
                               "in full"], rows), "round diffs")


def build_report(store: Store, out: Path, samples: int = 6, round_id: int | None = None) -> Path:
    """Writes the report to ``out`` (an .html file) and returns it: the headline metrics with their
    intervals first, then the gates, what changed between the last two rounds, and the rest."""
    rounds = sorted(set(store.rounds("regions")) | set(store.rounds("texts")))
    if not rounds:
        raise StoreError(f"{store.root} has no annotation rounds to report on")
    shown = round_id if round_id is not None else rounds[-1]
    if shown not in rounds:
        raise StoreError(f"round {shown} does not exist in {store.root} (rounds: {', '.join(map(str, rounds))})")
    images = store.read("images")
    images = images.filter(pc.equal(images.column("status"), "ok"))
    uris = dict(zip(images.column("image_id").to_pylist(), images.column("uri").to_pylist()))
    found = metric_rows(store)
    parts = [f"<h1>fld-engine report: {html.escape(str(store.root))}</h1>",
             f"<p>{len(rounds)} round(s) with annotations: {', '.join(map(str, rounds))}; samples from round {shown}.</p>",
             "<h2>Headline: one metric per family, per round</h2>", _headline(found),
             "<h2>Gates: what each task's decision compared on gold</h2>", _gates(found),
             "<h2>Round by round: what each round changed</h2>", _round_diffs(store, rounds),
             f"<h2>What changed (round {rounds[-2] if len(rounds) > 1 else rounds[-1]} to {rounds[-1]})</h2>",
             _changed_samples(store, rounds, uris, samples)]
    metrics = values_table(found)
    parts.append("<h2>Headline metrics by round</h2>")
    with tempfile.TemporaryDirectory() as tmp:
        plots = plot_metrics(found, tmp)
        parts.append("<div class=plots>" + "".join(
            f"<img alt='{html.escape(p.stem)}' src='{_png(Image.open(p))}'>" for p in plots) + "</div>"
                     if plots else "<p><em>no gold metrics yet</em></p>")
    parts += ["<h2>All metrics by round</h2>", _table(metrics, "metrics")]
    parts += ["<h2>Rounds</h2>", _table(rounds_table(store), "rounds")]
    stats = dataset_stats(store)
    parts += ["<h2>FLD-5B statistics</h2>", f"<p>{stats.images_ok} images ({stats.images_error} unreadable)</p>",
              _table(stats.table)]
    con = connect(store)
    try:
        found = con.execute("SELECT round, filter, split_part(reason, ':', 1) AS reason, count(*) AS rows FROM rejected "
                            "GROUP BY ALL ORDER BY round, rows DESC").fetchall()
    finally:
        con.close()
    parts += ["<h2>What the filters dropped</h2>", _table(QueryResult(["round", "filter", "reason", "rows"], found), "drops")]
    parts.append(f"<h2>Samples (round {shown})</h2>")
    annotated = set(store.read("regions", shown, columns=["image_id"]).column("image_id").to_pylist())
    texts = {r["image_id"]: r["text"] for r in store.read("texts", shown).to_pylist() if r["granularity"] == "brief"}
    chosen = [(i, u) for i, u in uris.items() if i in annotated or i in texts][:samples]
    for image_id, uri in chosen:
        src, legend = draw_sample(store, shown, image_id, uri)
        phrases = "".join(f"<div><span class=swatch style='background:rgb{c}'></span>{html.escape(p)}</div>" for p, c in legend)
        caption = html.escape(texts.get(image_id, ""))
        parts.append(f"<div class=sample><img alt='sample {html.escape(image_id[:8])}' src='{src}'><div><b>{caption}</b></div>{phrases}</div>")
    doc = f"<!doctype html><html><head><meta charset=utf-8><title>fld-engine report</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    return out
