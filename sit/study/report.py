def write_report(out):
    return out
