"""The status page's only stylesheet, inline in the page: no external assets, no web fonts."""

from __future__ import annotations

__all__ = ["STYLE"]

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
header{background:#1d2330;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:20px}
.meta{margin:2px 0 0;color:#b9c2d0;font-size:12px}
main{padding:8px 24px 24px;max-width:1400px}
h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #d5dbe3;padding-bottom:4px}
h3{font-size:15px;margin:0 0 8px}
article.campaign{background:#fff;border:1px solid #d5dbe3;border-radius:6px;padding:12px 16px;margin:0 0 12px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d5dbe3}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6eaf0;vertical-align:middle}
th{background:#eef1f5;font-weight:600;font-size:12px;white-space:nowrap}
td{font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{display:flex;height:10px;min-width:120px;background:#dfe4ea;border-radius:5px;overflow:hidden}
article>.bar{height:14px;margin:0 0 6px}
.bar .ok{background:#2f9e57}.bar .bad{background:#d64541}
.rate{display:flex;gap:8px;align-items:center}.rate .bar{flex:1}
.figures{margin:0 0 10px}.pace{margin-left:12px;color:#55607a}
.state{padding:1px 7px;border-radius:9px;background:#dfe4ea;font-size:12px;white-space:nowrap}
.state.completed{background:#d3f0dc}.state.running{background:#d8e6fb}
.state.completed_with_failures{background:#fbe7c6}.state.failed{background:#f8d2d0}
.message{font-family:ui-monospace,Menlo,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
td:has(.message){white-space:normal;min-width:260px}
.scroll{overflow-x:auto}
code{font-size:12px;background:#eef1f5;padding:1px 4px;border-radius:3px}
.empty,.note{color:#55607a;font-style:italic}
.problems{background:#f8d2d0;border:1px solid #d64541;border-radius:6px;padding:4px 12px;margin-top:12px}
footer{padding:0 24px 24px;color:#55607a;font-size:12px}
a{color:#2457b5}
a.id{white-space:normal}.piece{white-space:nowrap}
"""
