"""Training: the step graphs and Keras's fit / evaluate loop."""
