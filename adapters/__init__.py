"""Trainer integrations, imported as ``rtpo_data.adapters.<trainer>``.

Each adapter imports the core and its trainer; the core never imports an adapter, so
``pip install rtpo-data`` needs no trainer at all.
"""
