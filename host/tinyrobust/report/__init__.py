"""The report: results.json turned into report.html, plots and CSV tables."""
