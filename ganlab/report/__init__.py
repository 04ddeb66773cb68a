"""Reports: run components on a checkpoint (``run``, each under a ``time_limit``), follow a run across its epochs
(``epochs``), assemble the page's data (``page``, ``data``) and lay it out (``render``); ``seed_runs`` summarises
reports over GAN seeds."""
from ganlab.report.page import make_report

__all__ = ["make_report"]
