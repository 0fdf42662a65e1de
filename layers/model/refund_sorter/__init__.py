"""refund-sorter."""
