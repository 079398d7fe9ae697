"""optiscape analysis: reads workdirs (never the training code's memory)."""
