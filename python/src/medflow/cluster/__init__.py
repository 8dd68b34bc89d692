"""cluster-unsupervised: categorise unlabelled images by self-supervised embedding and clustering."""
