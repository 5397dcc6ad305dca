"""What a trial measures: accuracy, size, group fairness, forgetting, counterfactual and intrinsic bias."""
