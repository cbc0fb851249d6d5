"""Audience (用户运营): segments, tags, lifecycle stages, RFM, personas, profiles, CLV."""
