"""Rich rendering of a budget search: the trials as a table (dominated trials grey, the chosen one bold), the
pruned and skipped candidates in one line each, and the nearest candidates when nothing meets the budget."""

from __future__ import annotations

from typing import Any


def _kb(v) -> str:
    return "-" if v is None else f"{v / 1000:,.1f} KB"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _pt(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def trial_table(title: str, trials: list[dict[str, Any]], chosen: str | None):
    from rich.table import Table

    t = Table(title=title)
    for c in ("trial", "size", "gzip", "p95 ms", "top-1", "drop pt", "front", "budget", "from"):
        t.add_column(c)
    for e in trials:
        m = e.get("metrics") or {}
        if e.get("status") == "failed":
            t.add_row(e["label"], "", "", "", "", "", "", f"failed: {e.get('error', '')[:60]}", e.get("source") or "",
                      style="red")
            continue
        ok = "meets" if e.get("meets_budget") else "misses " + ",".join(e.get("misses") or {})
        style = "bold green" if e["key"] == chosen else (None if e.get("pareto") else "grey50")
        t.add_row(e["label"], _kb(m.get("bytes")), _kb(m.get("gzip_bytes")), _ms(m.get("latency_p95_ms")),
                  _pct(m.get("top1")), _pt(m.get("drop_pp")), "yes" if e.get("pareto") else "", ok,
                  e.get("source") or "", style=style)
    return t


def render(doc: dict[str, Any], con) -> None:
    chosen = (doc.get("chosen") or {}).get("key")
    tried = [e for e in doc["trials"] if e["status"] in ("ok", "failed")]
    c = doc["counts"]
    con.print(f"[bold]budget search[/bold] {doc['budget']['text']}: {len(tried)} trial(s) ({c['run']} run, "
              f"{c['cached']} from the cache), {c['pruned']} pruned by the size estimates, {c['skipped']} skipped, "
              f"{doc['wall_s']:.1f} s")
    con.print(trial_table("trials (grey: dominated, off the Pareto front)", tried, chosen))
    for status in ("pruned", "skipped"):
        rows = [e for e in doc["trials"] if e["status"] == status]
        if rows:
            con.print(f"{status}: " + "; ".join(f"{e['label']} ({e['reason']})" for e in rows))
    if doc.get("chosen"):
        ch = doc["chosen"]
        con.print(f"[bold green]chosen:[/bold green] {ch['label']} (smallest accuracy drop among the "
                  f"{sum(1 for e in tried if e.get('meets_budget'))} trial(s) that meet the budget)")
    for k, v in (doc.get("outputs") or {}).items():
        con.print(f"{k}: {v}")


def render_nearest(doc: dict[str, Any], con) -> None:
    if doc.get("nearest"):
        con.print(trial_table("nearest candidates (none meets the budget)", doc["nearest"], None))
