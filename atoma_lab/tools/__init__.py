"""Developer tools run by the Makefile, outside the API users import: the benchmark report
(``python -m atoma_lab.tools.benchreport``) and the notebook renderer
(``python -m atoma_lab.tools.notebook_runner``)."""
