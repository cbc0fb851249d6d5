"""Pydantic's own validation messages, so the console's catalogs translate them.

Field errors of activity specs and segment rules come from Pydantic; :func:`yunying.errors.
pydantic_message` keeps each one's template (``Input should be greater than {gt}``) and
parameters, and the console looks the template up in its catalog like any other message. This
table only marks the templates for ``make i18n``; ``tests/console/test_units.py`` checks that they
are still the ones ``pydantic_core`` writes. A type not listed is shown in English.
"""

from __future__ import annotations

from yunying.console.data import N_

#: Pydantic error type -> its English message template.
TEMPLATES = {
    'missing': N_('Field required'),
    'extra_forbidden': N_('Extra inputs are not permitted'),
    'int_type': N_('Input should be a valid integer'),
    'int_parsing': N_('Input should be a valid integer, unable to parse string as an integer'),
    'int_from_float': N_('Input should be a valid integer, got a number with a fractional part'),
    'float_type': N_('Input should be a valid number'),
    'float_parsing': N_('Input should be a valid number, unable to parse string as a number'),
    'string_type': N_('Input should be a valid string'),
    'string_too_short': N_('String should have at least {min_length} character{expected_plural}'),
    'string_too_long': N_('String should have at most {max_length} character{expected_plural}'),
    'bool_type': N_('Input should be a valid boolean'),
    'bool_parsing': N_('Input should be a valid boolean, unable to interpret input'),
    'greater_than': N_('Input should be greater than {gt}'),
    'greater_than_equal': N_('Input should be greater than or equal to {ge}'),
    'less_than': N_('Input should be less than {lt}'),
    'less_than_equal': N_('Input should be less than or equal to {le}'),
    'literal_error': N_('Input should be {expected}'),
    'too_short': N_('{field_type} should have at least {min_length} item{expected_plural} after validation, not {actual_length}'),
    'too_long': N_('{field_type} should have at most {max_length} item{expected_plural} after validation, not {actual_length}'),
    'dict_type': N_('Input should be a valid dictionary'),
    'list_type': N_('Input should be a valid list'),
    'date_type': N_('Input should be a valid date'),
    'date_parsing': N_('Input should be a valid date in the format YYYY-MM-DD, {error}'),
    'date_from_datetime_parsing': N_('Input should be a valid date or datetime, {error}'),
    'datetime_type': N_('Input should be a valid datetime'),
    'datetime_parsing': N_('Input should be a valid datetime, {error}'),
    'model_type': N_('Input should be a valid dictionary or instance of {class_name}'),
    'model_attributes_type': N_('Input should be a valid dictionary or object to extract fields from'),
    'enum': N_('Input should be {expected}'),
    'string_pattern_mismatch': N_("String should match pattern '{pattern}'"),
    'multiple_of': N_('Input should be a multiple of {multiple_of}'),
    'finite_number': N_('Input should be a finite number'),
    'none_required': N_('Input should be None'),
    'datetime_from_date_parsing': N_('Input should be a valid datetime or date, {error}'),
    'timezone_aware': N_('Input should have timezone info'),
}  # fmt: skip
