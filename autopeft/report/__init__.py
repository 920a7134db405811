"""What a person reads or ships: report.html, plots, the plan picture, model cards, the peft export."""
