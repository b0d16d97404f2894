"""The QARR router: request -> choose tier -> stream from tier -> relay."""
