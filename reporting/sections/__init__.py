"""The report's sections after the paper's tables, one module each; document.write_report puts them in order."""
