"""Operations engine: activities from templates, rewards ledger, live rules.

Importing the package registers the review handlers anti-fraud calls when a held claim is
approved or denied (:func:`yunying.activities.service.decide_review`).
"""

from yunying.activities.service import register_review_handlers

register_review_handlers()
