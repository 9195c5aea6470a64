"""Proposers turn a prompt and a parent program into patch text."""
