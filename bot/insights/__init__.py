"""Insights: what users ask that no rule answers, grouped, with charts and rule suggestions.

- words.py    normalise and cut a message into words (rjieba), less the stop words
- groups.py   unanswered messages → groups of near-duplicates
- suggest.py  a group → close rules, the rule that answers it now, a draft rule and test
- figures.py  the log of a period → Report (counts, rates, rule hits, heat map, suggestions)
- charts.py   Report → SVG charts
- service.py  reading the store page by page off the event loop; reports cached per period
- report.py   `kefu report`: text, JSON or CSV
"""

from .figures import Report, Tally
from .service import Insights, Period, PeriodError

__all__ = ["Insights", "Period", "PeriodError", "Report", "Tally"]
