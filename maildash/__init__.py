"""Maildash Campaigns command line for operators."""
