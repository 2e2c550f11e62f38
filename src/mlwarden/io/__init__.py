"""Loading models and data; every model file passes the safety gate first."""
