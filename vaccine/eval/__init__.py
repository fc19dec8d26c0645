"""Evaluation: batched generation, Fine-tune Accuracy, embedding drift and t-SNE pictures."""
