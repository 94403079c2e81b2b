"""What both stacks share, free of any web framework: settings, contract, codecs, stores."""
