"""optiscape models: flax.linen modules applied as `model.apply({"params": p}, x)`."""
