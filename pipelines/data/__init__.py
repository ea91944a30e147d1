"""The data stage: where labelled texts come from, how they are cleaned and split, and what they look like (EDA)."""
