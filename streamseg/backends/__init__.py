"""Ways of running the network: each backend turns a float (N, 3, h, w) tensor at
the network's input size into (N, 1, h, w) logits."""
