"""A small library for Constant Contact's v3 API and OAuth server.

It knows CC's endpoints, payloads and error shapes, and nothing about ccportal's models or
services: HTTP leaves through a sender the caller injects (ccportal's gateway), so every call
is scheduled, authorised and recorded in one place.
"""
