"""The bottom layer every forkyard package may use and that uses none of them: the one git
wrapper (``git``), the one process wrapper (``process``), the error roots with their exit
codes (``errors``) and the one file-lock helper (``lock``)."""
