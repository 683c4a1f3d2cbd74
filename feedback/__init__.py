"""May heavy work run now? Probes, cached readings, verdicts and the settings behind them."""
