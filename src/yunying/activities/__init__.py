"""Operations engine: activities from templates, rewards ledger, live rules."""
