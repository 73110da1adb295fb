"""Insights: what users ask that no rule answers, grouped, with charts and rule suggestions.

- words.py    normalise and cut a message into words (rjieba), less the stop words
- groups.py   unanswered messages → groups of near-duplicates
- suggest.py  a group → close rules, the rule that answers it now, a draft rule and test
- figures.py  the log of a period → Report (counts, rates, rule hits, heat map, suggestions)
- charts.py   Report → SVG charts
- service.py  reading the store page by page off the event loop; reports cached per period
- report.py   `kefu report`: text, JSON or CSV
- settings.py bot.yaml's `insights:` section

The package imports nothing itself: config.py reads settings.py, and must not pull in the store (which reads
config) or the segmenter.
"""
