"""Migration: import the verified ZIPs into a target project, and keep the old → new job map."""
