"""The report: named sections (data + renderer) in report.json and report.md, and the plots they show."""
